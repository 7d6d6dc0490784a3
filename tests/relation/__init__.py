"""Tests of relkd.relation, one file per module."""
