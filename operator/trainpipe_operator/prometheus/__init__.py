"""Queries the operator makes to Prometheus (GPU utilization from DCGM)."""

from trainpipe_operator.prometheus.gpu import PromQLGpuSource

__all__ = ["PromQLGpuSource"]
