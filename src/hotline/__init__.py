"""Hotline: a call center platform in Python."""

__version__ = "0.1.0"
