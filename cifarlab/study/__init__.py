"""The study as a whole: its results reader (the one reader of step outputs), the cost model
and time estimate, and `python -m cifarlab status`."""
