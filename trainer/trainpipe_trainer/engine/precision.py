"""Mixed precision: bf16 or fp16 autocast on CUDA, off on CPU (CPU autocast
gains little for these models and changes the numerics the resume test pins)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Precision:
    dtype: torch.dtype | None  # None: full fp32
    device_type: str

    @property
    def name(self) -> str:
        return {None: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}[self.dtype]

    @property
    def needs_scaler(self) -> bool:
        return self.dtype == torch.float16

    @contextlib.contextmanager
    def autocast(self) -> Iterator[None]:
        if self.dtype is None:
            yield
        else:
            with torch.autocast(device_type=self.device_type, dtype=self.dtype):
                yield


def resolve_precision(setting: str, device: torch.device) -> Precision:
    if device.type != "cuda" or setting == "off":
        return Precision(None, device.type)
    if setting == "bf16" or (setting == "auto" and torch.cuda.is_bf16_supported()):
        return Precision(torch.bfloat16, "cuda")
    return Precision(torch.float16, "cuda")
