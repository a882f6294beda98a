"""Experiment tracking: an MLflow REST client (mlflow_rest) shared with the
control plane, and the sinks a training job reports to."""
