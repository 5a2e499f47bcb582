"""Experiments: grids of cells, run one topology per cell, written atomically and resumably."""
