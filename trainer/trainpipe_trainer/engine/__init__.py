"""The training engine: one loop for one process and for DDP."""
