"""DSPy integration of neuroshot."""
