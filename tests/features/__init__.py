"""Tests of relkd.features, one file per module."""
