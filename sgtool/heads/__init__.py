"""Relation heads: one file per head, found by name through the registry."""
