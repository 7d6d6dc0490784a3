"""Tests of relkd.evaluation, one file per module."""
