"""Tests of posture."""
