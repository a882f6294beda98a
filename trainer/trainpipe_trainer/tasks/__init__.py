"""Tasks the engine trains: each one brings its data, model, loss and metrics."""
