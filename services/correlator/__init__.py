"""The correlator service."""
