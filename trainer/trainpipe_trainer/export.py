"""Export a trained model for serving and prove the exports compute what
PyTorch computes: the Finalization gate's ``exported`` and ``export-parity``.

- ONNX (``model.onnx``): ``torch.onnx.export`` with a dynamic batch axis.
  The torch.export-based exporter (``dynamo=True``) is tried first; it needs
  the ``onnxscript`` package, and where that (or the export) fails the
  TorchScript-based exporter (``dynamo=False``, opset 17) is used. The
  report's ``exporter`` and ``notes`` say which and why. The file is checked
  with ``onnx.checker.check_model`` and run with onnxruntime's
  CPUExecutionProvider.
- ``torchscript``: ``torch.jit`` is deprecated in this torch (its trace, script
  and load warn that they will go), so the artifact is a ``torch.export``
  program (``model.pt2``, dynamic batch), loaded back with
  ``torch.export.load``. Only where torch.export cannot capture the model is a
  traced TorchScript module (``model.ts``) written instead; ``kind`` records
  which.

Parity: the exported model and the PyTorch model (eval mode, fp32, CPU) run
on the same real inputs; the report has the largest absolute difference,
``allclose`` at rtol 1e-3 / atol 1e-5, and the number of inputs whose top-1
class agrees. Every failure is recorded in its format's entry; nothing is
raised past the report.
"""

from __future__ import annotations

import copy
import logging
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from trainpipe_trainer.contract.results import (
    EXPORT_FILE,
    PARITY_ATOL,
    PARITY_RTOL,
    ExportArtifact,
    ExportReport,
    ParityCheck,
    Preprocessing,
)

log = logging.getLogger("trainpipe.evaluate")

ONNX_FILE = "model.onnx"
PT2_FILE = "model.pt2"
TS_FILE = "model.ts"
INPUT_NAME = "input"
OUTPUT_NAME = "logits"
LEGACY_OPSET = 17
DYNAMO_OPSET = 18


def _error(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}".rstrip(": ")


@dataclass(frozen=True)
class ExportNaming:
    """How one exported module is named: its files (``<stem>.onnx``,
    ``<stem>.pt2``), its input and output, the part of the model it is (the
    VAE exports ``decoder``/``encoder``/``model``), and whether its output is
    class scores (then parity also compares the top-1 class)."""

    stem: str = "model"
    input_name: str = INPUT_NAME
    output_name: str = OUTPUT_NAME
    top1: bool = True
    part: str | None = None


def export_model(
    model: nn.Module,
    example_input: torch.Tensor,
    classes: Sequence[str],
    run_dir: str | Path,
    formats: Sequence[str],
    parity_inputs: torch.Tensor,
    preprocessing: Preprocessing | None,
    naming: ExportNaming | None = None,
    write: bool = True,
) -> ExportReport:
    """Export ``model`` in each of ``formats`` (``onnx``, ``torchscript``)
    into ``run_dir``, compare each export with PyTorch on ``parity_inputs``
    (N, C, H, W), write ``<run_dir>/export.json`` and return the report.

    ``example_input`` fixes the input's shape after the batch axis (its batch
    size does not matter: the batch axis is exported as dynamic). The model
    is copied to the CPU in eval mode; the caller's model is left as it was.
    ``naming``: file stem, input/output names, top-1 parity (default: a
    classifier's ``model.onnx`` with ``input`` -> ``logits``). ``write``:
    also write ``export.json`` (a task exporting several parts merges the
    reports and writes once).
    """
    naming = naming or ExportNaming()
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    if write:
        (run_dir / EXPORT_FILE).unlink(missing_ok=True)
    report = ExportReport(preprocessing=preprocessing, classes=list(classes), input_name=naming.input_name,
                          output_name=naming.output_name)
    try:
        cpu_model = copy.deepcopy(model).cpu().float().eval()
        example = _example_batch(example_input)
        report.input_shape = ["batch", *example.shape[1:]]
        inputs = parity_inputs.detach().cpu().float()
        with torch.no_grad():
            reference = cpu_model(inputs).numpy()
    except Exception as exc:  # noqa: BLE001 - recorded, never raised past the report
        for fmt in formats:
            report.artifacts.append(
                ExportArtifact(format=fmt, part=naming.part, error=f"cannot run the model: {_error(exc)}")
            )
        report.ok = False
        if write:
            report.write(run_dir / EXPORT_FILE)
        return report

    for fmt in formats:
        if fmt == "onnx":
            artifact, parity = _export_onnx(cpu_model, example, run_dir, inputs, reference, report, naming)
        elif fmt == "torchscript":
            artifact, parity = _export_program(cpu_model, example, run_dir, inputs, reference, naming)
        else:
            artifact = ExportArtifact(format=fmt, error=f"unknown export format {fmt!r} (onnx, torchscript)")
            parity = None
        artifact.part = naming.part
        report.artifacts.append(artifact)
        if parity is not None:
            parity.part = naming.part
            report.parity.append(parity)
        log.info("Export %s: %s%s", fmt, artifact.path or "not written",
                 f" ({artifact.error})" if artifact.error else "")
        if parity is not None:
            log.info("Parity %s: max |diff| %s, allclose %s, top-1 agrees on %d/%d",
                     parity.runtime, parity.max_abs_diff, parity.allclose, parity.top1_agree, parity.samples)
    report.ok = report.compute_ok()
    if naming.part is not None:
        report.parts[naming.part] = next((a.path for a in report.artifacts if a.format == "onnx" and a.path), "")
    if write:
        report.write(run_dir / EXPORT_FILE)
    return report


def _example_batch(example_input: torch.Tensor) -> torch.Tensor:
    """A CPU fp32 batch of at least 2: a batch of 1 would be specialised by
    torch.export instead of staying a dynamic dimension."""
    example = example_input.detach().cpu().float()
    if example.dim() == 3:
        example = example.unsqueeze(0)
    if example.shape[0] < 2:
        example = example[:1].expand(2, *example.shape[1:]).clone()
    return example[:2].contiguous()


def compare(
    runtime: str, run: Callable[[torch.Tensor], np.ndarray], inputs: torch.Tensor, reference: np.ndarray,
    top1: bool = True,
) -> ParityCheck:
    """Run ``run`` on ``inputs`` and compare with ``reference`` (PyTorch's
    output); ``top1``: the outputs are class scores, compare the top-1 class too."""
    parity = ParityCheck(runtime=runtime, samples=int(inputs.shape[0]), top1_applicable=top1)
    if inputs.shape[0] == 0:
        parity.error = "no parity inputs"
        return parity
    try:
        got = np.asarray(run(inputs), dtype=np.float32)
    except Exception as exc:  # noqa: BLE001 - recorded, never raised past the report
        parity.error = f"running the export failed: {_error(exc)}"
        return parity
    if got.shape != reference.shape:
        parity.error = f"output shape {list(got.shape)} != PyTorch's {list(reference.shape)}"
        return parity
    diff = float(np.max(np.abs(got.astype(np.float64) - reference.astype(np.float64))))
    parity.max_abs_diff = diff if np.isfinite(diff) else None
    parity.allclose = bool(np.allclose(got, reference, rtol=PARITY_RTOL, atol=PARITY_ATOL))
    if not top1:
        return parity
    agree = int((got.argmax(axis=1) == reference.argmax(axis=1)).sum())
    parity.top1_agree = agree
    parity.top1_agree_all = agree == parity.samples
    return parity


# ----------------------------------------------------------------------- ONNX
def _onnx_export(
    model: nn.Module, example: torch.Tensor, path: Path, notes: list[str], naming: ExportNaming
) -> tuple[str, int]:
    """Write ``path`` (through a temp file and a rename); returns (exporter,
    opset). The dynamo exporter first, then the TorchScript-based one."""
    tmp = path.with_name(f".{path.stem}.tmp{path.suffix}")
    path.unlink(missing_ok=True)
    try:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                torch.onnx.export(
                    model, (example,), str(tmp), dynamo=True, opset_version=DYNAMO_OPSET,
                    input_names=[naming.input_name], output_names=[naming.output_name],
                    dynamic_shapes=({0: torch.export.Dim("batch", min=1)},), external_data=False,
                )
            exporter, opset = "torch.onnx.export(dynamo=True)", DYNAMO_OPSET
        except Exception as exc:  # noqa: BLE001 - fall back to the TorchScript-based exporter
            notes.append(f"dynamo exporter unavailable ({_error(exc)}); used dynamo=False")
            tmp.unlink(missing_ok=True)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # it warns that it is the legacy exporter
                torch.onnx.export(
                    model, (example,), str(tmp), dynamo=False, opset_version=LEGACY_OPSET,
                    input_names=[naming.input_name], output_names=[naming.output_name],
                    dynamic_axes={naming.input_name: {0: "batch"}, naming.output_name: {0: "batch"}},
                )
            exporter, opset = "torch.onnx.export(dynamo=False)", LEGACY_OPSET
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)
    return exporter, opset


def _export_onnx(
    model: nn.Module, example: torch.Tensor, run_dir: Path, inputs: torch.Tensor,
    reference: np.ndarray, report: ExportReport, naming: ExportNaming,
) -> tuple[ExportArtifact, ParityCheck]:
    onnx_file = f"{naming.stem}.onnx"
    path = run_dir / onnx_file
    artifact = ExportArtifact(
        format="onnx", kind="onnx",
        load=(f"onnxruntime.InferenceSession('{onnx_file}', providers=['CPUExecutionProvider'])"
              f".run(['{naming.output_name}'], {{'{naming.input_name}': x}})"),
    )
    parity = ParityCheck(runtime="onnxruntime", samples=int(inputs.shape[0]))
    try:
        import onnx

        artifact.exporter, report.opset = _onnx_export(model, example, path, artifact.notes, naming)
        artifact.path, artifact.bytes = onnx_file, path.stat().st_size
        onnx.checker.check_model(str(path), full_check=True)
        artifact.checker_ok = True
        graph = onnx.load(str(path)).graph
        first = graph.input[0].type.tensor_type.shape.dim[0]
        report.dynamic_batch = bool(first.dim_param) and not first.HasField("dim_value")
        report.input_name, report.output_name = graph.input[0].name, graph.output[0].name
    except Exception as exc:  # noqa: BLE001 - recorded, never raised past the report
        artifact.error = _error(exc)
        parity.error = "no checked ONNX model to compare"
        return artifact, parity

    def run(batch: torch.Tensor) -> np.ndarray:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.log_severity_level = 3
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        return session.run([report.output_name], {report.input_name: batch.numpy()})[0]

    return artifact, compare("onnxruntime", run, inputs, reference, naming.top1)


# ---------------------------------------------- torch.export (or TorchScript)
def _export_program(
    model: nn.Module, example: torch.Tensor, run_dir: Path, inputs: torch.Tensor, reference: np.ndarray,
    naming: ExportNaming,
) -> tuple[ExportArtifact, ParityCheck]:
    artifact = ExportArtifact(format="torchscript")
    pt2_file, ts_file = f"{naming.stem}.pt2", f"{naming.stem}.ts"
    try:
        _save_pt2(model, example, run_dir / pt2_file, artifact)
    except Exception as exc:  # noqa: BLE001 - fall back to a traced TorchScript module
        artifact.notes.append(f"torch.export failed ({_error(exc)}); traced with torch.jit.trace")
        (run_dir / pt2_file).unlink(missing_ok=True)
        try:
            _save_ts(model, example, run_dir / ts_file, artifact)
        except Exception as exc2:  # noqa: BLE001 - recorded, never raised past the report
            artifact.error = _error(exc2)
    if artifact.error is not None or artifact.path is None:
        return artifact, ParityCheck(runtime="torch.export", error="no artifact to compare",
                                     top1_applicable=naming.top1)

    runtime = "torch.export" if artifact.kind == "torch.export" else "torchscript"
    path = run_dir / artifact.path

    def run(batch: torch.Tensor) -> np.ndarray:
        loaded = _load_program(path, artifact.kind)
        with torch.no_grad():
            return loaded(batch).numpy()

    return artifact, compare(runtime, run, inputs, reference, naming.top1)


def _load_program(path: Path, kind: str | None) -> Callable[[torch.Tensor], torch.Tensor]:
    if kind == "torch.export":
        return torch.export.load(str(path)).module()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        return torch.jit.load(str(path), map_location="cpu")


def _save_pt2(model: nn.Module, example: torch.Tensor, path: Path, artifact: ExportArtifact) -> None:
    program = torch.export.export(model, (example,), dynamic_shapes=({0: torch.export.Dim("batch", min=1)},))
    tmp = path.with_name(f".{path.stem}.tmp{path.suffix}")
    try:
        torch.export.save(program, str(tmp))
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)
    artifact.kind, artifact.exporter = "torch.export", "torch.export.export + torch.export.save"
    artifact.path, artifact.bytes = path.name, path.stat().st_size
    artifact.load = f"torch.export.load('{path.name}').module()(x)"
    _check_loads(path, artifact, example)


def _save_ts(model: nn.Module, example: torch.Tensor, path: Path, artifact: ExportArtifact) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        traced = torch.jit.trace(model, example)
        traced.save(str(path))
    artifact.kind, artifact.exporter = "torch.jit.trace", "torch.jit.trace + ScriptModule.save"
    artifact.path, artifact.bytes = path.name, path.stat().st_size
    artifact.load = f"torch.jit.load('{path.name}', map_location='cpu')(x)"
    _check_loads(path, artifact, example)


def _check_loads(path: Path, artifact: ExportArtifact, example: torch.Tensor) -> None:
    """checker_ok for a PyTorch artifact: it loads back and runs a batch of
    another size than the one it was exported with (the batch is dynamic)."""
    loaded = _load_program(path, artifact.kind)
    batch = torch.cat([example, example[:1]])
    with torch.no_grad():
        out = loaded(batch)
    if tuple(out.shape[:1]) != (batch.shape[0],):
        raise RuntimeError(f"loaded {path.name} returned shape {list(out.shape)} for a batch of {batch.shape[0]}")
    artifact.checker_ok = True
