"""Triplet matching and every metric, implemented once."""
