"""Training: configuration, the one training loop, teacher source and cache, losses, features, online and
distributed."""
