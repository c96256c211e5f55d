"""Helpers for testing dstdformat and code built on it: the reader's fuzz target and mutators."""
