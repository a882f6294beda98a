"""The gated phase machine and the local runner that drives it."""
