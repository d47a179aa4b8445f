"""Alembic platform migrations (a package so the revision files ship with Hotline)."""
