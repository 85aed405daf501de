"""Tests of policygen."""
