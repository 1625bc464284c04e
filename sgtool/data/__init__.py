"""Datasets: synthetic generator, real-dataset readers, the SGG h5 format."""
