"""Tests of the discovery family."""
