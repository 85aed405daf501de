"""Tests of correlator."""
