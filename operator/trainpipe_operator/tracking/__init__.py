"""Experiment tracking from the control plane: the run hierarchy (one MLflow
parent run per pipeline run, one child run per phase folder), gate outcomes
and reports, and the model registry. No torch, no wandb here; MLflow is
spoken through ``trainpipe_trainer.tracking.mlflow_rest``.

Tracking never decides a gate and never stops the pipeline: every call is
guarded, a server that cannot be reached sets ``status.tracking.degraded``
(condition TrackingDegraded), and what was missed is retried later."""
