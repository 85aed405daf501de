"""The policygen service."""
