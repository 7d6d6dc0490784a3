"""Tests of relkd.results, one file per module."""
