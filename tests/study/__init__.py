"""Tests of relkd.study, one file per module."""
