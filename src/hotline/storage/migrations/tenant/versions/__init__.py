"""Revision files for the tenant database(s)."""
