"""Tests of relkd.engine, one file per module."""
