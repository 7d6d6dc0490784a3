"""Tests of relkd.models, one file per module."""
