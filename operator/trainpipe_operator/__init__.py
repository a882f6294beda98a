"""trainpipe's control plane: the pipeline spec, phase machine, gates, kopf
operator and CLI. Never imports torch: training happens in trainpipe_trainer,
in another process."""

__version__ = "0.1.0"
