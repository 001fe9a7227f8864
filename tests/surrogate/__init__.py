"""Tests of the surrogate family."""
