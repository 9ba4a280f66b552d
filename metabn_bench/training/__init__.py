"""Training: the training loop and its distributed (DDP) helpers."""
