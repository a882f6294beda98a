"""The TrainingPipeline resource as pydantic models: the one source of truth
for the manifest `kubectl apply` and `trainpipe run` take, the CRD schema,
and the status both the operator and the local runner write."""

from trainpipe_operator.spec.pipeline import PipelineSpec, TrainingPipeline
from trainpipe_operator.spec.status import PipelineStatus

__all__ = ["PipelineSpec", "PipelineStatus", "TrainingPipeline"]
