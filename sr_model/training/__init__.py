"""Training: the run's config, the loop (`loop.train`), its resumable state, losses, validation and DDP."""
