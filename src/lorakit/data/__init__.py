"""Datasets and data preparation without training (see ARCHITECTURE.md)."""
