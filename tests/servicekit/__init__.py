"""Tests of servicekit."""
