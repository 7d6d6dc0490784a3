"""Tests of relkd.analysis, one file per module."""
