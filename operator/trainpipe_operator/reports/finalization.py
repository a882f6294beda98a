"""Phase 5 documents: ``test_results.md`` (the held-out test split, once),
``deployment_guide.md`` (inputs, preprocessing, outputs, how to load each
artifact), ``performance_ceiling.md`` (a pipeline that accepted its best
short of the target) and ``production_ready.md`` (the production-ready gate,
readable)."""

from __future__ import annotations

from collections.abc import Sequence

from trainpipe_operator.gates.checks import GateResult
from trainpipe_operator.gates.test_figures import test_metric
from trainpipe_operator.gates.vae_finalization import DECODER
from trainpipe_operator.reports.gate import render_gate
from trainpipe_operator.reports.markdown import fmt, table
from trainpipe_operator.reports.vae import render_vae_deployment_guide, render_vae_test_results
from trainpipe_operator.spec.status import RunResult
from trainpipe_operator.tasks import CLASSIFICATION, TaskCatalog
from trainpipe_trainer.contract.evidence import PreviewRecord
from trainpipe_trainer.contract.job_config import AudioConfig, VaeConfig
from trainpipe_trainer.contract.results import ExportReport, TestEvaluation

GUIDE_SECTIONS = ("Inputs", "Preprocessing", "Outputs", "Loading")


def _test_value(test: TestEvaluation, name: str) -> float | None:
    return test_metric(test, name)  # the gate's reading: one definition


def render_test_results(test: TestEvaluation, target: str, catalog: TaskCatalog = CLASSIFICATION,
                        previews: Sequence[PreviewRecord] = ()) -> str:
    """The layout is the task's (``catalog``, or a ``vae`` test evaluation):
    a VAE's test results embed the last of ``previews``, the final
    training's (``evidence.previews``); a custom task's list its metrics."""
    if catalog.task == "vae" or test.task == "vae":
        return render_vae_test_results(test, target, previews)
    if catalog.task != "classification":
        return _render_task_test_results(test, target, catalog)
    rows = [(c.class_name, c.precision, c.recall, c.f1, c.support) for c in test.per_class]
    lines = [
        "# Test results",
        "",
        "The held-out test split, never used for training or model selection, evaluated once.",
        "",
        table(["", ""], [
            ("samples", test.samples), ("accuracy", test.accuracy), (f"top-{min(5, len(test.classes))} accuracy", test.top5),
            ("loss", test.loss), ("macro F1", test.macro_f1), ("target", target),
            ("checkpoint", f"{test.checkpoint} (epoch {test.checkpoint_epoch})"),
        ]),
        "",
        "## Per-class metrics",
        "",
        table(["class", "precision", "recall", "F1", "support"], rows),
        "",
        "## Confusion matrix",
        "",
        f"![confusion matrix]({test.confusion_png})",
        "",
        "Rows: true class; columns: predicted class.",
        "",
        table(["true \\ predicted", *test.classes], [(name, *row) for name, row in zip(test.classes, test.confusion_matrix, strict=True)]),
        "",
    ]
    return "\n".join(lines)


def _render_task_test_results(test: TestEvaluation, target: str, catalog: TaskCatalog) -> str:
    """A task without classes: its test metrics by name (every figure the
    evaluation wrote, the catalog's first)."""
    names = [m.name for m in catalog.of_split("test")]
    names += [n for n in test.metrics if n not in names]
    described = {m.name: m.description for m in catalog.metrics}
    lines = [
        "# Test results",
        "",
        "The held-out test split, never used for training or model selection, evaluated once.",
        "",
        table(["", ""], [
            ("task", catalog.task), ("samples", test.samples), ("target", target),
            ("checkpoint", f"{test.checkpoint} (epoch {test.checkpoint_epoch})"),
        ]),
        "",
        "## Metrics",
        "",
        table(["metric", "value", "meaning"], [(n, _test_value(test, n), described.get(n, "")) for n in names]),
        "",
    ]
    return "\n".join(lines)


def render_deployment_guide(export: ExportReport, model_name: str, test: TestEvaluation | None,
                            catalog: TaskCatalog = CLASSIFICATION, *,
                            vae: VaeConfig | None = None, audio: AudioConfig | None = None) -> str:
    """A VAE (task vae, a vae test evaluation, or an exported decoder) gets
    the sampling guide; ``vae`` and ``audio`` are the final job's ``vae`` and
    ``data.audio`` sections (latent size, mel settings; defaults when None).
    Other tasks' guides ignore them."""
    if catalog.task == "vae" or (test is not None and test.task == "vae") or DECODER in export.parts:
        return render_vae_deployment_guide(export, model_name, test, vae, audio)
    if catalog.task != "classification":
        return _render_task_deployment_guide(export, model_name, test, catalog)
    pre = export.preprocessing
    shape = export.input_shape or [1, 3, pre.image_size if pre else "H", pre.image_size if pre else "W"]
    lines = [
        "# Deployment guide",
        "",
        f"Model `{model_name}`, {len(export.classes)} classes"
        + (f", test accuracy {fmt(test.accuracy)}." if test else "."),
        "",
        "## Inputs",
        "",
        f"A float32 tensor of shape `{shape}` (`N x 3 x H x W`, NCHW); the batch dimension is "
        + ("dynamic." if export.dynamic_batch else "fixed at export time."),
        f"ONNX input name: `{export.input_name}`.",
        "",
        "## Preprocessing",
        "",
    ]
    if pre:
        lines += [
            "1. Decode the image as RGB (grayscale is replicated to 3 channels).",
            f"2. Resize to {pre.image_size} x {pre.image_size} ({pre.resize}).",
            "3. Scale pixel values to [0, 1] (divide 8-bit values by 255).",
            f"4. Normalize per channel: `(x - mean) / std` with mean `{pre.mean}` and std `{pre.std}`.",
            "",
        ]
    lines += [
        "## Outputs",
        "",
        f"Logits of shape `[N, {len(export.classes)}]` (ONNX output `{export.output_name}`); "
        "apply softmax for probabilities; the class is the argmax, in this order:",
        "",
        table(["index", "class"], list(enumerate(export.classes))),
        "",
        "## Loading",
        "",
    ]
    for artifact in export.artifacts:
        state = "ok" if artifact.checker_ok and not artifact.error else f"FAILED: {artifact.error}"
        lines += [f"### {artifact.format} (`{artifact.path}`, {artifact.kind}, {state})", "", "```python", artifact.load, "```", ""]
    lines += [
        "### PyTorch checkpoint (`checkpoints/best_model.pt` of the final training)",
        "",
        "```python",
        "import torch",
        "state = torch.load('checkpoints/best_model.pt', map_location='cpu', weights_only=True)",
        "model.load_state_dict(state['model_state_dict'])  # model built as in the training config",
        "```",
        "",
        "## Parity",
        "",
        table(["runtime", "samples", "max abs diff", "allclose (rtol, atol)", "top-1 agrees"], [
            (p.runtime, p.samples, p.max_abs_diff, f"{fmt(p.allclose)} ({p.rtol}, {p.atol})", f"{p.top1_agree}/{p.samples}")
            for p in export.parity
        ]),
        "",
    ]
    return "\n".join(lines)


def _render_task_deployment_guide(export: ExportReport, model_name: str, test: TestEvaluation | None,
                                  catalog: TaskCatalog) -> str:
    """A task without classes: what the export report says the model takes and
    gives, each exported part, how to load each artifact."""
    figures = ", ".join(f"{m.name} {fmt(_test_value(test, m.name))}" for m in catalog.of_split("test")) if test else ""
    shape = export.input_shape or ["batch", "..."]
    lines = [
        "# Deployment guide",
        "",
        f"Model `{model_name}` (task {catalog.task})" + (f"; on the held-out test split: {figures}." if figures else "."),
        "",
        "## Inputs",
        "",
        f"A float32 tensor of shape `{shape}`; the batch dimension is "
        + ("dynamic." if export.dynamic_batch else "fixed at export time.")
        + f" ONNX input name: `{export.input_name}`.",
        "",
        "## Preprocessing",
        "",
        "As in training (the job config in `job.yaml`: "
        + ("`data.audio`: resample, chunk, log-mel spectrogram)." if catalog.task == "vae" else "the task's own)."),
        "",
        "## Outputs",
        "",
        f"ONNX output `{export.output_name}`: {export.output}",
        "",
    ]
    if export.parts:
        lines += [table(["part", "file"], sorted(export.parts.items())), ""]
    lines += ["## Loading", ""]
    for artifact in export.artifacts:
        state = "ok" if artifact.checker_ok and not artifact.error else f"FAILED: {artifact.error}"
        lines += [f"### {artifact.format} (`{artifact.path}`, {artifact.kind}, {state})", "", "```python",
                  artifact.load, "```", ""]
    lines += [
        "## Parity",
        "",
        table(["runtime", "samples", "max abs diff", "allclose (rtol, atol)"], [
            (p.runtime, p.samples, p.max_abs_diff, f"{fmt(p.allclose)} ({p.rtol}, {p.atol})") for p in export.parity
        ]),
        "",
    ]
    return "\n".join(lines)


def render_performance_ceiling(
    target: str,
    target_value: float,
    reason: str,
    best_run: str | None,
    best: tuple[str, float | None],
    test: tuple[str, float | None],
    runs: list[RunResult],
    tried: list[tuple[int, list[str]]],
) -> str:
    """Seed 001: "accept best result, document performance ceiling, deploy".
    ``best``/``test``: (name, value) of the best validation figure and the test
    figure; ``tried``: (iteration, the config changes it made) per Optimization
    iteration."""
    lines = [
        "# Performance ceiling",
        "",
        "The pipeline stopped short of its target and finalized its best result, as the master "
        "workflow says (accept the best result, document the performance ceiling, deploy).",
        "",
        "## Target",
        "",
        f"Target: {target} (value {fmt(target_value)}). Not reached.",
        "",
        f"Why the pipeline stopped: {reason}",
        "",
        "## Best result",
        "",
        table(["", ""], [
            ("best run", best_run or "n/a"),
            (f"best validation {best[0]}", best[1]),
            (test[0] + " (held-out test split)", test[1]),
            ("target", target_value),
        ]),
        "",
        "## What was tried",
        "",
        _runs_table(runs, best[0]),
        "",
    ]
    for iteration, changes in tried:
        lines += [f"Optimization iteration {iteration}: " + ("; ".join(changes) if changes else "no change applied"), ""]
    lines += [
        "A ceiling like this usually means the data's quality, the model's capacity or the task's own "
        "difficulty limits the result; more of the same tuning is unlikely to move it. Next steps: "
        "more or cleaner data, a larger model (spec.model.name), or a target that fits the task.",
        "",
    ]
    return "\n".join(lines)


def _runs_table(runs: list[RunResult], metric: str) -> str:
    """Every run and its target metric (by name); the best val accuracy only
    where a run recorded one (classification)."""
    accuracy = any(r.best_val_acc is not None for r in runs)
    headers = ["phase", "iteration", "run", "status", f"target metric (validation: {metric})"]
    if accuracy:
        headers[-1] = "target metric (validation)"
        return table([*headers, "best val acc", "best val loss"],
                     [(r.phase, r.iteration, r.run_dir, r.status, r.target_metric, r.best_val_acc, r.best_val_loss)
                      for r in runs])
    return table([*headers, "best val loss"],
                 [(r.phase, r.iteration, r.run_dir, r.status, r.target_metric, r.best_val_loss) for r in runs])


def render_production_ready(gate: GateResult, budget_note: str | None) -> str:
    text = render_gate(gate, "Production readiness")
    if budget_note:
        text += f"\n> {budget_note}\n"
    verdict = "ready for production" if gate.passed else "NOT ready for production"
    return text + f"\n**Verdict: {verdict}.**\n"
