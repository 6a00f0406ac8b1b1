"""modelrail: event-driven continuous training for tabular LightGBM models."""

__version__ = "0.1.0"
