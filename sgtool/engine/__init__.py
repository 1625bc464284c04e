"""Stages that chain the others: training, prediction, the demo."""
