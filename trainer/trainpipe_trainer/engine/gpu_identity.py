"""Which GPUs each rank ran on, by NVIDIA UUID: the evidence's ``gpus``.

Why: the operator measures GPU utilization from DCGM exporter series in
Prometheus. Pod names are no key for that (a RayJob's pods are named from the
submission id, and a Ray Job API job runs on a shared RayCluster whose pods
belong to no job), but a GPU's UUID is: dcgm-exporter labels every series
with it (``UUID``). So every rank records its host and the UUID of the device
it trained on; rank 0 gathers them into ``evidence.json``.

The UUID comes from torch (``get_device_properties(i).uuid``, the physical
device whatever ``CUDA_VISIBLE_DEVICES`` says), else from NVML. ``cuda`` is a
seam: anything with torch.cuda's ``is_available``/``get_device_properties``
(tests pass a stand-in; there is no GPU on CI).
"""

from __future__ import annotations

import logging
import socket
from typing import Any

import torch

from trainpipe_trainer.contract.evidence import RankGpus

log = logging.getLogger(__name__)


def uuid_text(raw: Any) -> str:
    """``GPU-<uuid>`` as NVML and dcgm-exporter write it; torch gives the bare UUID."""
    text = raw.decode() if isinstance(raw, bytes) else str(raw)
    text = text.strip()
    if not text:
        return ""
    return text if text.startswith(("GPU-", "MIG-")) else f"GPU-{text}"


def _nvml_uuid(index: int) -> str:
    """The UUID NVML gives for the process's CUDA device ``index``."""
    import pynvml

    from trainpipe_trainer.engine.gpu_monitor import _nvml_target

    pynvml.nvmlInit()
    try:
        kind, ref = _nvml_target(index)
        if kind == "uuid":
            return ref
        return uuid_text(pynvml.nvmlDeviceGetUUID(pynvml.nvmlDeviceGetHandleByIndex(int(ref))))
    finally:
        pynvml.nvmlShutdown()


def rank_gpus(rank: int, device: torch.device, *, cuda: Any = None, host: str | None = None) -> RankGpus:
    """This rank's host and the UUID of the device it trains on. Never raises:
    what could not be read is the record's ``reason``."""
    cuda = torch.cuda if cuda is None else cuda
    host = host or socket.gethostname()
    name = str(device)
    if device.type != "cuda":
        why = "trained on the CPU" + ("" if cuda.is_available() else " (CUDA is not available)")
        return RankGpus(rank=rank, host=host, device=name, reason=why)
    index = device.index if device.index is not None else cuda.current_device()
    uuid, model, problems = "", "", []
    try:
        props = cuda.get_device_properties(index)
        model = str(getattr(props, "name", "") or "")
        uuid = uuid_text(getattr(props, "uuid", "") or "")
    except Exception as exc:  # noqa: BLE001 - a record never fails the job
        problems.append(f"torch: {exc}")
    if not uuid:
        try:
            uuid = _nvml_uuid(index)
        except Exception as exc:  # noqa: BLE001 - no NVML, no driver
            problems.append(f"NVML: {exc}")
    if not uuid:
        return RankGpus(rank=rank, host=host, device=name, gpu_names=[model] if model else [],
                        reason="no UUID for " + name + ": " + "; ".join(problems or ["none reported"]))
    return RankGpus(rank=rank, host=host, device=name, gpu_uuids=[uuid], gpu_names=[model] if model else [])


def gather_rank_gpus(rank: int, world_size: int, device: torch.device) -> list[RankGpus]:
    """Every rank's record, in rank order (a collective when distributed:
    every rank calls it at the same point)."""
    mine = rank_gpus(rank, device)
    if world_size <= 1 or not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return [mine]
    gathered: list[Any] = [None] * world_size
    torch.distributed.all_gather_object(gathered, mine.model_dump())
    return [RankGpus.model_validate(g) for g in gathered]


def describe(records: list[RankGpus]) -> str:
    """One log line: ``rank 0 on node-a: cuda:0 GPU-...; rank 1 ...``."""
    parts = []
    for r in records:
        what = ", ".join(r.gpu_uuids) if r.gpu_uuids else (r.reason or "no GPU")
        parts.append(f"rank {r.rank} on {r.host}: {r.device} {what}")
    return "; ".join(parts)
