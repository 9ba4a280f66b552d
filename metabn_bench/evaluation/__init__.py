"""Evaluation: cells of (corruption, severity), test-time protocols, per-image results."""
