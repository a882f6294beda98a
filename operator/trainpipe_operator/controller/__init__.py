"""The Kubernetes operator (kopf): reconciles TrainingPipelines through the
same phase machine as ``trainpipe run``, the resource's status being its state."""
