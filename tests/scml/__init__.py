"""Tests of the scml family."""
