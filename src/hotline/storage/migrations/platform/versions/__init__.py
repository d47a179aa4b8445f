"""Revision files for the platform database(s)."""
