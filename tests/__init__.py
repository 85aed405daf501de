"""Parallax test suite; mirrors the source tree."""
