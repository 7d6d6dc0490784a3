"""Tests of relkd.data, one file per module (beside the golden files the other tests read)."""
