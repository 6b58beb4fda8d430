"""Figures: the one table of figures (figures, torch-free, read by the .smk files), the house
style, each run's figures and the per-study comparison figures."""
