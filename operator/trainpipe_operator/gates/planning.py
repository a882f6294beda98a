"""Phase 1, the reproducibility gate: the run can be repeated and the data can
be trusted before any training time is spent.

Check ids: seeds-fixed, environment-documented, config-valid, data-reachable,
split-proportions, split-integrity, samples-finite, preflight. All mandatory.
For ``spec.task: vae`` the data checks are the audio ones (``planning_audio``:
data-reachable, audio-quality, split-proportions, split-integrity,
samples-finite).
"""

from __future__ import annotations

from typing import Any

from trainpipe_operator.gates.checks import (
    Check,
    GateResult,
    failed,
    first_few,
    is_finite,
    passed,
    skipped,
    warned,
)
from trainpipe_operator.gates.inputs import join_path
from trainpipe_operator.gates.planning_audio import (
    check_audio_data_reachable,
    check_audio_quality,
    check_audio_samples_finite,
    check_audio_split_integrity,
)
from trainpipe_operator.spec.pipeline import PipelineSpec
from trainpipe_trainer.contract.data_report import DataReport
from trainpipe_trainer.contract.results import PREFLIGHT_FILE, PreflightReport

GATE = "reproducibility"
PHASE = "Planning"
ENVIRONMENT_FILE = "environment.json"
CONFIG_FILE = "training_config.yaml"
DATA_REPORT_FILE = "data_report.json"
SPLIT_TOLERANCE = 0.02  # actual fractions within 2 points of the requested ones
SEED_KEYS = ("python", "numpy", "torch")
SOFTWARE_FIELDS = ("python_version", "torch_version", "ray_version", "code_version")
# Recorded even when null (CPU machine): the key must exist, its value may not.
GPU_FIELDS = ("cuda_version", "cuda_available", "gpu_count", "gpus", "nvidia_driver_version")


def check_seeds(environment: dict[str, Any], spec: PipelineSpec, evidence: str) -> Check:
    threshold = f"python, numpy, torch seeds = spec.seed ({spec.seed})"
    seeds = environment.get("seeds")
    if not isinstance(seeds, dict):
        return failed("seeds-fixed", None, threshold, evidence, "environment.json records no seeds.")
    keys = [*SEED_KEYS, *(["cuda"] if "cuda" in seeds else [])]
    wrong = [f"{k}={seeds.get(k)}" for k in keys if seeds.get(k) != spec.seed]
    if wrong:
        return failed("seeds-fixed", first_few(wrong), threshold, evidence,
                      f"Seeds not set from spec.seed {spec.seed}: {', '.join(wrong)}.")
    det = environment.get("deterministic_algorithms")
    note = "" if det is None else f"; deterministic algorithms {'on' if det else 'off'}"
    return passed("seeds-fixed", spec.seed, threshold, evidence,
                  f"{', '.join(keys)} seeded with {spec.seed}{note}.")


def _code_version_text(code: Any) -> str | None:
    if not isinstance(code, dict):
        return None
    if code.get("git_commit"):
        dirty = " (dirty)" if code.get("git_dirty") else ""
        return f"commit {str(code['git_commit'])[:12]}{dirty}"
    if code.get("package_version"):
        return f"package {code['package_version']}"
    return None


def check_environment(environment: dict[str, Any], spec: PipelineSpec, evidence: str) -> Check:
    """Every software field has a value (ray may be absent where the runtime is
    local, with the trainer's note saying so); every GPU field is recorded,
    null allowed on a CPU machine (a note, not a failure)."""
    threshold = ", ".join((*SOFTWARE_FIELDS, *GPU_FIELDS))
    if not environment:
        return failed("environment-documented", None, threshold, evidence, "environment.json is missing or empty.")
    notes = environment.get("notes") or {}
    problems: list[str] = []
    remarks: list[str] = []
    unrecorded = [k for k in (*SOFTWARE_FIELDS, *GPU_FIELDS) if k not in environment]
    if unrecorded:
        problems.append(f"not recorded: {', '.join(unrecorded)}")
    for key in ("python_version", "torch_version"):
        if key in environment and not environment[key]:
            problems.append(f"{key} is null ({notes.get(key, 'no reason given')})")
    if "ray_version" in environment and not environment["ray_version"]:
        why = notes.get("ray_version", "no reason given")
        if spec.runtime.type == "local" and "ray_version" in notes:
            remarks.append(f"no Ray ({why}; the runtime is local)")
        else:
            problems.append(f"ray_version is null ({why})")
    code = _code_version_text(environment.get("code_version"))
    if "code_version" in environment and code is None:
        problems.append(f"no code version ({notes.get('code_version.git_commit', 'no commit or package version')})")
    elif code and not code.startswith("commit"):
        remarks.append(f"no git commit ({notes.get('code_version.git_commit', 'not a git checkout')})")
    gpus = environment.get("gpus")
    if not unrecorded and not gpus:
        why = notes.get("gpus", "no GPU visible")
        if spec.resources.gpus_per_worker > 0:
            remarks.append(f"GPUs requested but none seen on the machine that wrote it ({why})")
        else:
            remarks.append(f"CPU only: GPU fields are null ({why})")
    summary = ", ".join(filter(None, [
        f"python {environment.get('python_version')}",
        f"torch {environment.get('torch_version')}",
        f"ray {environment.get('ray_version')}" if environment.get("ray_version") else None,
        f"CUDA {environment.get('cuda_version')}" if environment.get("cuda_version") else None,
        f"driver {environment.get('nvidia_driver_version')}" if environment.get("nvidia_driver_version") else None,
        ", ".join(f"{g.get('name')} ({(g.get('memory_total_bytes') or 0) / 2**30:.0f} GiB)"
                  for g in gpus if isinstance(g, dict)) if isinstance(gpus, list) else None,
        code,
    ]))
    if problems:
        return failed("environment-documented", summary, threshold, evidence,
                      "Environment incompletely documented: " + "; ".join(problems) + ".")
    note = (" Note: " + "; ".join(remarks) + ".") if remarks else ""
    if any(r.startswith("GPUs requested") for r in remarks):
        return warned("environment-documented", summary, threshold, evidence, f"Documented: {summary}.{note}")
    return passed("environment-documented", summary, threshold, evidence, f"Documented: {summary}.{note}")


def check_config(config_errors: list[str], evidence: str) -> Check:
    threshold = "the resolved training config validates"
    if config_errors:
        return failed("config-valid", len(config_errors), threshold, evidence,
                      f"The training config is invalid: {first_few(list(config_errors), 3)}.")
    return passed("config-valid", 0, threshold, evidence, "The resolved training config validates.")


def check_data_reachable(report: DataReport | None, evidence: str) -> Check:
    threshold = "more than one class; every class has training samples"
    if report is None:
        return failed("data-reachable", None, threshold, evidence,
                      "No data report: the dataset did not open.")
    classes = report.classes
    if len(classes) < 2:
        return failed("data-reachable", len(classes), threshold, evidence,
                      f"The dataset has {len(classes)} class(es); classification needs at least 2.")
    train = report.counts.get("train", {})
    empty = [c for c in classes if train.get(c, 0) <= 0]
    if empty:
        return failed("data-reachable", len(classes), threshold, evidence,
                      f"Class(es) with no training sample: {first_few(empty)}.")
    per_class = sorted(train[c] for c in classes)
    counts = f"{per_class[0]}-{per_class[-1]} training samples per class, {report.total_samples} in all"
    other = [f"{p.kind} {p.class_name}" + (f" in {p.split}" if p.split else "") for p in report.class_problems]
    if other:
        return warned("data-reachable", len(classes), threshold, evidence,
                      f"{len(classes)} classes, {counts}; class problems: {first_few(other)}.")
    return passed("data-reachable", len(classes), threshold, evidence, f"{len(classes)} classes, {counts}.")


def check_samples_reachable(report: DataReport | None, evidence: str) -> Check:
    """A custom task's data: no classes to count, but every split the task
    trains and validates on holds samples (its own report's counts)."""
    threshold = "samples in train and val"
    if report is None:
        return failed("data-reachable", None, threshold, evidence,
                      "No data report: the task reported no data (a custom task's build_data returns one).")
    per_split = {split: sum(report.counts.get(split, {}).values()) for split in ("train", "val", "test")}
    empty = [split for split in ("train", "val") if per_split[split] <= 0]
    counts = ", ".join(f"{split} {n}" for split, n in per_split.items())
    if empty:
        return failed("data-reachable", report.total_samples, threshold, evidence,
                      f"No samples in {', '.join(empty)} ({counts}).")
    return passed("data-reachable", report.total_samples, threshold, evidence,
                  f"{report.total_samples} samples: {counts}.")


def check_split_proportions(report: DataReport | None, evidence: str) -> Check:
    threshold = SPLIT_TOLERANCE
    if report is None:
        return failed("split-proportions", None, threshold, evidence, "No data report: the splits are unknown.")
    deviation = report.max_fraction_deviation()
    if report.layout == "presplit" or deviation is None:
        return skipped("split-proportions",
                       "pre-split layout: the folders fix the proportions, nothing was requested", evidence)
    actual = ", ".join(f"{k} {v:.3f}" for k, v in report.actual_fractions.items())
    wanted = ", ".join(f"{k} {v:.3f}" for k, v in (report.requested_fractions or {}).items())
    value = round(deviation, 4)
    if deviation <= SPLIT_TOLERANCE + 1e-9:
        return passed("split-proportions", value, threshold, evidence,
                      f"Actual fractions ({actual}) within {SPLIT_TOLERANCE:.0%} of the requested ({wanted}).")
    return failed("split-proportions", value, threshold, evidence,
                  f"Actual fractions ({actual}) deviate {deviation:.1%} from the requested ({wanted}).")


def check_split_integrity(report: DataReport | None, evidence: str) -> Check:
    threshold = 0
    if report is None:
        return failed("split-integrity", None, threshold, evidence, "No data report: the splits are unknown.")
    dups = report.duplicates_across_splits
    if dups:
        groups = [" = ".join(f"{f.split}/{f.path}" for f in g.files) for g in dups]
        return failed("split-integrity", len(dups), threshold, evidence,
                      f"{len(dups)} sample(s) lie in more than one split (leakage): {first_few(groups, 3)}.")
    return passed("split-integrity", 0, threshold, evidence, "No sample (by content hash) is in two splits.")


def check_samples_finite(report: DataReport | None, evidence: str) -> Check:
    threshold = 0
    if report is None:
        return failed("samples-finite", None, threshold, evidence, "No data report: samples were not checked.")
    nonfinite = [f"{s.split}/{s.path} ({s.nan_count} NaN, {s.inf_count} Inf)" for s in report.nonfinite_samples]
    unreadable = [f"{u.path} ({u.error})" for u in report.unreadable_files]
    if nonfinite or unreadable:
        parts = []
        if nonfinite:
            parts.append(f"{len(nonfinite)} with NaN/Inf: {first_few(nonfinite)}")
        if unreadable:
            parts.append(f"{len(unreadable)} unreadable: {first_few(unreadable)}")
        return failed("samples-finite", len(nonfinite) + len(unreadable), threshold, evidence,
                      "Bad samples: " + "; ".join(parts) + ".")
    return passed("samples-finite", 0, threshold, evidence,
                  f"All {report.total_samples} samples decode and are finite.")


def check_preflight(preflight: PreflightReport | None, evidence: str, gpus_requested: int = 0) -> Check:
    """``gpus_requested`` (spec.resources.gpusPerWorker) > 0 and a preflight
    that ran on the CPU fails: the job asked for GPUs and would not get one."""
    threshold = "a real batch per split; one finite forward and backward pass"
    if gpus_requested > 0:
        threshold += "; on a GPU (resources.gpusPerWorker > 0)"
    if preflight is None:
        return failed("preflight", None, threshold, evidence, "The preflight did not run.")
    problems = []
    if preflight.error:
        problems.append(preflight.error)
    if gpus_requested > 0 and not preflight.device.startswith("cuda") and "CUDA is not available" not in (
            preflight.error or ""):
        problems.append(f"spec.resources.gpusPerWorker is {gpus_requested} but the preflight ran on "
                        f"{preflight.device!r}, not a GPU: the job would train on the CPU")
    bad_splits = [f"{name}: {s.error or 'no batch'}" for name, s in preflight.splits.items()
                  if not s.ok and not s.skipped]
    if bad_splits:
        problems.append("loaders failed (" + "; ".join(bad_splits) + ")")
    if not preflight.loss_finite:
        problems.append(f"loss is not finite ({preflight.loss})")
    if not preflight.grads_finite:
        names = first_few(preflight.params_with_nonfinite_grad, 3)
        problems.append("gradients are not finite" + (f" ({names})" if names else ""))
    if preflight.ok and not problems:
        loss = f"{preflight.loss:.4f}" if is_finite(preflight.loss) else str(preflight.loss)
        shape = "x".join(str(n) for n in preflight.batch_shape) or "?"
        return passed("preflight", preflight.loss, threshold, evidence,
                      f"Batch {shape} through {preflight.model or 'the model'} on {preflight.device}: "
                      f"loss {loss}, gradients finite.")
    if not problems:
        problems.append("the preflight reports not ok")
    return failed("preflight", preflight.loss if is_finite(preflight.loss) else None, threshold, evidence,
                  "Preflight failed: " + "; ".join(problems) + ".")


def evaluate_planning(
    environment: dict[str, Any],
    config_errors: list[str],
    data_report: DataReport | None,
    preflight: PreflightReport | None,
    spec: PipelineSpec,
    *,
    run_dir: str = "",
) -> GateResult:
    """``run_dir`` is the Planning folder relative to the pipeline's root (e.g.
    ``01_planning``); it prefixes the evidence paths."""
    env_path = join_path(run_dir, ENVIRONMENT_FILE)
    data_path = join_path(run_dir, DATA_REPORT_FILE)
    environment = environment or {}
    if spec.task == "vae":
        data = [
            check_audio_data_reachable(data_report, data_path),
            check_audio_quality(data_report, data_path),
            check_split_proportions(data_report, data_path),
            check_audio_split_integrity(data_report, data_path),
            check_audio_samples_finite(data_report, data_path),
        ]
    else:
        data = [
            (check_samples_reachable if spec.task == "custom" else check_data_reachable)(data_report, data_path),
            check_split_proportions(data_report, data_path),
            check_split_integrity(data_report, data_path),
            check_samples_finite(data_report, data_path),
        ]
    return GateResult(gate=GATE, phase=PHASE, checks=[
        check_seeds(environment, spec, env_path),
        check_environment(environment, spec, env_path),
        check_config(config_errors, join_path(run_dir, CONFIG_FILE)),
        *data,
        check_preflight(preflight, join_path(run_dir, PREFLIGHT_FILE), spec.resources.gpus_per_worker),
    ])
