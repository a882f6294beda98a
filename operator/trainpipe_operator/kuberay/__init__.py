"""KubeRay: the RayJob the operator creates for ``runtime.type: rayjob``, how
its status reads, and a check of generated objects against KubeRay's CRD.

Plain dicts in and out: no Kubernetes client, no Ray, no torch imported here.
"""

from trainpipe_operator.kuberay.rayjob import RayJobState, build_rayjob, rayjob_outcome

__all__ = ["RayJobState", "build_rayjob", "rayjob_outcome"]
