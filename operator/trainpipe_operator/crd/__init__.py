"""The ``TrainingPipeline`` CustomResourceDefinition, generated from the spec
models: :func:`build_crd` (the single entry point, a dict) and
:func:`render_crd_yaml` (the text of ``crds/trainingpipelines.trainpipe.io.yaml``)."""

from trainpipe_operator.crd.generate import (
    CRD_FILE,
    CRD_NAME,
    build_crd,
    build_schema,
    render_crd_yaml,
)

__all__ = ["CRD_FILE", "CRD_NAME", "build_crd", "build_schema", "render_crd_yaml"]
