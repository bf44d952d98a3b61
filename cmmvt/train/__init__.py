"""Supervised training on cached features: datasets of crops and views, the training loop."""
