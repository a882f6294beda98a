"""Phase 5, the production-ready gate.

Check ids, in order:

* ``final-training``: the summary of the final run's health, failing when any
  mandatory execution check failed, warning when any warned (or a
  non-mandatory one failed). It is followed by every execution check itself,
  nested under the prefix ``final-training/`` (``final-training/completed``,
  ``final-training/gpu-utilization``, ...) with its own mandatory flag, so a
  person sees exactly which one moved the summary.
* ``test-evaluated``, ``target-met-on-test``, ``ceiling-documented``,
  ``exported``, ``export-parity``, ``deployment-guide``, ``approval``.

``target-met-on-test`` compares the held-out test split's figure with the
target, by name through the task's catalog: ``test_X`` for a ``val_X`` or
``test_X`` target (test accuracy for val_acc, test loss for val_loss, the
VAE's test_recon for val_recon), read from ``test_evaluation.json``'s
``metrics`` (an older file without them: its accuracy/loss fields); the
validation figures only chose the model. A pipeline that accepted its best
result short of the target (seed 001: diminishing returns, the iterations
used up, the time budget spent) warns there instead of failing, and
``ceiling-documented`` checks that ``performance_ceiling.md`` says so with
the figures.

``approval`` that is required and not given is a ``fail`` whose message is
exactly ``awaiting approval`` (``AWAITING_APPROVAL``): the phase machine routes
that to AwaitingApproval instead of Failed.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from trainpipe_operator.gates.checks import (
    Check,
    GateResult,
    failed,
    first_few,
    is_finite,
    missing_sections,
    passed,
    quotes_figure,
    skipped,
    warned,
)
from trainpipe_operator.gates.execution import execution_checks
from trainpipe_operator.gates.inputs import GpuMeasurement, RunFiles
from trainpipe_operator.gates.test_figures import TEST_LABELS, test_metric
from trainpipe_operator.gates.vae_finalization import (
    check_vae_deployment_guide,
    check_vae_export_parity,
    check_vae_exported,
    check_vae_test_evaluated,
)
from trainpipe_operator.spec.pipeline import PipelineSpec
from trainpipe_operator.tasks import CLASSIFICATION, TaskCatalog, catalog_for
from trainpipe_trainer.contract.evidence import Evidence
from trainpipe_trainer.contract.results import (
    EXPORT_FILE,
    PARITY_ATOL,
    PARITY_RTOL,
    TEST_EVALUATION_FILE,
    ExportReport,
    TestEvaluation,
)

GATE = "production-ready"
PHASE = "Finalization"
FINAL_PREFIX = "final-training/"
AWAITING_APPROVAL = "awaiting approval"
GUIDE = "deployment_guide.md"
CEILING = "performance_ceiling.md"
CEILING_SECTIONS = ("Target", "Best result", "What was tried")
GUIDE_SECTIONS = ("Inputs", "Preprocessing", "Outputs", "Loading")
# The runtimes that check each format's parity, and the words a guide uses for it.
PARITY_RUNTIMES = {"onnx": ("onnxruntime",), "torchscript": ("torchscript", "torch.export")}
GUIDE_WORDS = {"onnx": ("onnx",), "torchscript": ("torchscript", "torch.export", "pt2", "torch.jit")}


def check_final_training(details: list[Check], files: RunFiles) -> Check:
    ev = files.at("evidence.json")
    threshold = "no mandatory execution check fails"
    fails = [c.id for c in details if c.result == "fail" and c.mandatory]
    notes = [c.id for c in details if c.result == "warn" or (c.result == "fail" and not c.mandatory)]
    if fails:
        return failed("final-training", len(fails), threshold, ev,
                      f"The final run is not healthy: {first_few(fails)} failed.")
    if notes:
        return warned("final-training", 0, threshold, ev,
                      f"The final run is healthy, with notes on {first_few(notes)}.")
    return passed("final-training", 0, threshold, ev, "The final run is healthy: every execution check passed.")


def check_test_evaluated(test: TestEvaluation | None, files: RunFiles,
                         catalog: TaskCatalog = CLASSIFICATION) -> Check:
    if catalog.task != "classification":
        return _test_metrics_evaluated(test, files, catalog)
    ev = files.at(TEST_EVALUATION_FILE)
    threshold = "accuracy, per-class metrics and confusion matrix on the held-out test split"
    if test is None:
        return failed("test-evaluated", None, threshold, ev, "The test split was not evaluated.")
    problems = []
    if test.samples <= 0:
        problems.append("no test sample")
    if not is_finite(test.accuracy):
        problems.append(f"accuracy is {test.accuracy}")
    if not test.per_class:
        problems.append("no per-class metrics")
    if not test.confusion_matrix:
        problems.append("no confusion matrix")
    elif sum(sum(row) for row in test.confusion_matrix) != test.samples:
        problems.append(f"the confusion matrix does not add up to the {test.samples} samples")
    accuracy = test.accuracy if is_finite(test.accuracy) else None
    if problems or accuracy is None:
        return failed("test-evaluated", accuracy, threshold, ev,
                      "The test evaluation is incomplete: " + "; ".join(problems) + ".")
    macro_f1 = "n/a" if test.macro_f1 is None else f"{test.macro_f1:.4f}"
    return passed("test-evaluated", round(accuracy, 6), threshold, ev,
                  f"Test accuracy {accuracy:.4f} on {test.samples} held-out samples, "
                  f"{len(test.per_class)} classes, macro F1 {macro_f1}.")


def _test_metrics_evaluated(test: TestEvaluation | None, files: RunFiles, catalog: TaskCatalog) -> Check:
    """A task without classes: every test metric its catalog names, finite,
    on a non-empty held-out split."""
    ev = files.at(TEST_EVALUATION_FILE)
    names = [m.name for m in catalog.of_split("test")]
    threshold = ", ".join(names) + " on the held-out test split"
    if test is None:
        return failed("test-evaluated", None, threshold, ev, "The test split was not evaluated.")
    values = {name: test_metric(test, name) for name in names}
    problems = [] if test.samples > 0 else ["no test sample"]
    problems += [f"{name} is {test.metrics.get(name, 'missing')}" for name, v in values.items() if v is None]
    first = next((v for v in values.values() if v is not None), None)
    shown = round(first, 6) if first is not None else None
    if problems:
        return failed("test-evaluated", shown, threshold, ev,
                      "The test evaluation is incomplete: " + "; ".join(problems) + ".")
    figures = ", ".join(f"{name} {value:.4f}" for name, value in values.items())
    return passed("test-evaluated", shown, threshold, ev, f"On {test.samples} held-out samples: {figures}.")


@dataclass(frozen=True)
class AcceptedBest:
    """The pipeline accepted its best result short of the target (seed 001:
    "accept best result, document performance ceiling, deploy")."""

    reason: str  # why: diminishing returns, iterations used up, budget spent, ...
    best_value: float | None  # the best validation value of the tracked metric
    ceiling_text: str | None  # performance_ceiling.md, as written


def test_figure(test: TestEvaluation | None, metric: str,
                catalog: TaskCatalog = CLASSIFICATION) -> tuple[str, float | None]:
    """(name, value) of the test split's figure for a target metric, by name:
    ``test_X`` for a ``val_X`` or ``test_X`` target (the test loss for a
    val_loss target, the test accuracy for val_acc); None when the test split
    was not evaluated, the task reports no such figure, or it is not finite."""
    on = catalog.on_test(metric)
    if on is None:
        return f"test figure for {metric}", None
    return TEST_LABELS.get(on.name, on.name), test_metric(test, on.name)


def check_target_on_test(test: TestEvaluation | None, spec: PipelineSpec, files: RunFiles,
                         accepted: AcceptedBest | None) -> Check:
    target = spec.target
    catalog = catalog_for(spec)
    ev = files.at(TEST_EVALUATION_FILE)
    metric = spec.target_metric
    what, value = test_figure(test, metric, catalog)
    relation = catalog.metric(metric).relation
    judged = catalog.on_test(metric)
    on = "" if judged is not None and judged.name == metric else (
        f" (the target is set on {metric}; it is judged on the test split)")
    if value is None:
        return failed("target-met-on-test", None, target.value, ev,
                      f"No {what} on the held-out test split (test_evaluation.json is missing or its {what} "
                      f"is not finite): the target cannot be checked without it.")
    shown = round(value, 6)
    if target.met(value):
        return passed("target-met-on-test", shown, target.value, ev,
                      f"Target met on the test split: {what} {value:.4f} {relation} {target.value}{on}.")
    if accepted is not None:
        return warned("target-met-on-test", shown, target.value, ev,
                      f"Target not met on the test split ({what} {value:.4f}, wanted {relation} {target.value}{on}); "
                      f"the pipeline accepted its best result ({accepted.reason}): the performance ceiling is "
                      f"documented in {CEILING}.")
    # Not an accepted ceiling: the validation figures said the target was met
    # (that is how the pipeline got here), the held-out split says otherwise.
    return failed("target-met-on-test", shown, target.value, ev,
                  f"Target not met on the test split: {what} {value:.4f}, wanted {relation} {target.value}{on}. "
                  "Validation had met it, so the validation split overstates the model: enlarge "
                  "spec.data.split.val, or lower spec.target.value.")


def check_ceiling_documented(accepted: AcceptedBest | None, test: TestEvaluation | None, spec: PipelineSpec,
                             files: RunFiles) -> Check:
    """Only for a pipeline that accepted its best: performance_ceiling.md has its
    sections and quotes the target, the best validation figure and the test figure."""
    ev = files.at(CEILING)
    threshold = ", ".join(CEILING_SECTIONS) + "; the target, best validation and test figures"
    if accepted is None:
        return skipped("ceiling-documented", "the pipeline did not stop short of its target", ev)
    text = accepted.ceiling_text
    if not text or not text.strip():
        return failed("ceiling-documented", 0, threshold, ev, f"{CEILING} is missing or empty.")
    problems = [f"no section {name!r}" for name in missing_sections(text, CEILING_SECTIONS)]
    what, value = test_figure(test, spec.target_metric, catalog_for(spec))
    figures = {"the target": spec.target.value, "the best validation figure": accepted.best_value, what: value}
    problems += [f"does not quote {name} ({figure:.4f})" for name, figure in figures.items()
                 if figure is not None and not quotes_figure(text, figure)]
    if problems:
        return failed("ceiling-documented", len(problems), threshold, ev,
                      f"{CEILING} " + "; ".join(problems) + ".")
    return passed("ceiling-documented", 0, threshold, ev,
                  f"{CEILING} documents the ceiling: target {spec.target.value}, best validation "
                  f"{accepted.best_value}, {what} {value}.")


def check_exported(export: ExportReport | None, spec: PipelineSpec, files: RunFiles) -> Check:
    ev = files.at(EXPORT_FILE)
    wanted = list(spec.finalization.export)
    threshold = ", ".join(wanted)
    if export is None:
        return failed("exported", None, threshold, ev, "Nothing was exported (no export report).")
    ok, ok_formats, problems = [], [], []
    for fmt in wanted:
        art = export.artifact(fmt)
        if art is None:
            problems.append(f"{fmt}: not written")
        elif art.error:
            problems.append(f"{fmt}: {art.error}")
        elif not art.path:
            problems.append(f"{fmt}: no file")
        elif not art.checker_ok:
            check = "onnx.checker rejected it" if fmt == "onnx" else "it did not load back and run"
            problems.append(f"{fmt}: {check}")
        else:
            ok.append(f"{fmt} ({art.path})")
            ok_formats.append(fmt)
    value = ", ".join(ok_formats)
    if problems:
        return failed("exported", value or None, threshold, ev, "Export incomplete: " + "; ".join(problems) + ".")
    return passed("exported", value, threshold, ev, f"Exported and checked: {', '.join(ok)}.")


def check_export_parity(export: ExportReport | None, spec: PipelineSpec, files: RunFiles) -> Check:
    """Outputs match PyTorch within the tolerances; a classifier's top-1
    class also agrees on every input (a task without classes: outputs only)."""
    ev = files.at(EXPORT_FILE)
    classes = spec.task == "classification"
    threshold = f"rtol {PARITY_RTOL:g}, atol {PARITY_ATOL:g}" + (", top-1 agrees on every input" if classes else "")
    if export is None:
        return failed("export-parity", None, threshold, ev, "No export report: parity was not checked.")
    problems, diffs = [], []
    for fmt in spec.finalization.export:
        if not any(p.runtime in PARITY_RUNTIMES.get(fmt, (fmt,)) for p in export.parity):
            problems.append(f"{fmt}: no parity check ({' or '.join(PARITY_RUNTIMES.get(fmt, (fmt,)))})")
    for p in export.parity:
        if p.max_abs_diff is not None and is_finite(p.max_abs_diff):
            diffs.append(p.max_abs_diff)
        if p.error:
            problems.append(f"{p.runtime}: {p.error}")
        elif not p.allclose:
            problems.append(f"{p.runtime}: outputs differ from PyTorch (max abs diff {p.max_abs_diff})")
        elif classes and p.top1_applicable and not p.top1_agree_all:
            problems.append(f"{p.runtime}: top-1 class differs on {p.samples - p.top1_agree} of {p.samples} inputs")
    value = float(f"{max(diffs):.3g}") if diffs else None
    if problems:
        return failed("export-parity", value, threshold, ev, "Export parity fails: " + "; ".join(problems) + ".")
    runtimes = ", ".join(f"{p.runtime} ({p.samples} inputs)" for p in export.parity)
    return passed("export-parity", value, threshold, ev,
                  f"Exported models match PyTorch in fp32: {runtimes}; max abs diff {value}.")


def check_deployment_guide(guide_text: str | None, spec: PipelineSpec, files: RunFiles,
                           export: ExportReport | None = None, test: TestEvaluation | None = None) -> Check:
    """The guide's sections, a loading recipe per format, and the facts a reader
    acts on matching the evidence: every exported file's path, every class
    (index order is the model's output), and the test accuracy."""
    ev = files.at(GUIDE)
    threshold = ", ".join(GUIDE_SECTIONS) + "; every exported file, every class and the test accuracy quoted"
    if not guide_text or not guide_text.strip():
        return failed("deployment-guide", 0, threshold, ev, "deployment_guide.md is missing or empty.")
    missing = missing_sections(guide_text, GUIDE_SECTIONS)
    present = len(GUIDE_SECTIONS) - len(missing)
    if missing:
        return failed("deployment-guide", present, threshold, ev,
                      f"deployment_guide.md lacks the section(s): {', '.join(missing)}.")
    problems = []
    if export is not None:
        problems += [f"the file {a.path}" for a in export.artifacts if a.path and a.path not in guide_text]
        problems += [f"the class {c!r}" for c in export.classes if c not in guide_text]
    if test is not None and is_finite(test.accuracy) and not quotes_figure(guide_text, test.accuracy):
        problems.append(f"the test accuracy {test.accuracy:.4f}")
    if problems:
        return failed("deployment-guide", present, threshold, ev,
                      f"deployment_guide.md does not name {first_few(problems)}.")
    text = guide_text.lower()
    unexplained = [f for f in spec.finalization.export if not any(w in text for w in GUIDE_WORDS.get(f, (f,)))]
    if unexplained:
        return warned("deployment-guide", present, threshold, ev,
                      f"deployment_guide.md does not say how to load: {', '.join(unexplained)}.")
    return passed("deployment-guide", present, threshold, ev,
                  "deployment_guide.md covers inputs, preprocessing, outputs and loading each artifact, "
                  "with the files, classes and test accuracy of this run.")


def check_approval(approved: bool | None, spec: PipelineSpec) -> Check:
    ev = "spec.approval"
    if not spec.approval.required:
        return skipped("approval", "approval not required (spec.approval.required is false)", ev)
    if approved:
        return passed("approval", True, "approved by a person", ev, "A person approved the result.")
    return failed("approval", approved, "approved by a person", ev, AWAITING_APPROVAL)


def evaluate_finalization(
    evidence: Evidence,
    files: RunFiles,
    gpu: GpuMeasurement | None,
    spec: PipelineSpec,
    phase_budget_seconds: float | None,
    test: TestEvaluation | None,
    export: ExportReport | None,
    guide_text: str | None,
    approved: bool | None,
    accepted: AcceptedBest | None,
    *,
    checkpoint_every: int | None = 1,
    keep_periodic: int | None = 3,
    preview_every: int | None = None,
) -> GateResult:
    """``accepted``: set when the pipeline accepted its best result short of the
    target (see :class:`AcceptedBest`); None when it finalizes a result that met it.
    For a ``vae`` pipeline test-evaluated, exported, export-parity and
    deployment-guide are the VAE's (``vae_finalization``), under the same ids."""
    details = execution_checks(evidence, files, gpu, spec, phase_budget_seconds,
                               checkpoint_every=checkpoint_every, keep_periodic=keep_periodic,
                               preview_every=preview_every)
    nested = [replace(c, id=FINAL_PREFIX + c.id) for c in details]
    checks = [check_final_training(details, files), *nested]
    catalog = catalog_for(spec)
    if catalog.task == "vae":
        evaluated = check_vae_test_evaluated(test, files)
        exported = check_vae_exported(export, check_exported(export, spec, files), files)
        parity = check_vae_export_parity(export, list(spec.finalization.export), files)
        guide = check_vae_deployment_guide(check_deployment_guide(guide_text, spec, files, export, test),
                                           guide_text, test, export, files)
    else:
        evaluated = check_test_evaluated(test, files, catalog)
        exported = check_exported(export, spec, files)
        parity = check_export_parity(export, spec, files)
        guide = check_deployment_guide(guide_text, spec, files, export, test)
    checks += [
        evaluated,
        check_target_on_test(test, spec, files, accepted),
        check_ceiling_documented(accepted, test, spec, files),
        exported,
        parity,
        guide,
        check_approval(approved, spec),
    ]
    return GateResult(gate=GATE, phase=PHASE, checks=checks)
