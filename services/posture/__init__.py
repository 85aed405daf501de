"""The posture service."""
