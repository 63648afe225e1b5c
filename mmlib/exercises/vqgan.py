"""Notebook fill-ins (being written)."""
