"""Drawings of scene graphs and plots."""
