"""Tests of the taskmet family."""
