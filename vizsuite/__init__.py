"""vizsuite: feature visualization, attribution and galleries for PyTorch vision models."""

__version__ = "0.1.0"
