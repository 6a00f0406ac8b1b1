"""Dataset contracts, their checks, and synthetic data that matches them."""
