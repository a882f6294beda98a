"""The gpu-utilization check as a pure function, and the PromQL the operator
builds from a job's evidence (docs/gates.md, ``gpu-utilization``).

The UUIDs come from evidence.json, which the job writes: untrusted. A value
that is not a GPU UUID never reaches a query, and the check fails naming it."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from pydantic import ValidationError

from trainpipe_operator.controller.settings import OperatorSettings
from trainpipe_operator.gates.execution import SM_ACTIVE_STUCK, check_gpu_utilization
from trainpipe_operator.gates.inputs import GpuMeasurement
from trainpipe_operator.gates.planning import check_preflight
from trainpipe_operator.prometheus.gpu import (
    NO_PROMETHEUS,
    NO_UUIDS,
    NO_WINDOW,
    InvalidUuid,
    PromQLGpuSource,
    uuid_regex,
    valid_uuid,
)
from trainpipe_operator.spec.pipeline import PipelineSpec
from trainpipe_trainer.contract.evidence import Evidence, RankGpus
from trainpipe_trainer.contract.results import PreflightReport

UUID_A = "GPU-6f2ba7ff-5c3a-4d1e-9b7a-0c1d2e3f4a5b"
UUID_B = "GPU-0a1b2c3d-4e5f-6789-abcd-ef0123456789"
START = datetime(2026, 12, 2, 6, 0, 0, tzinfo=timezone.utc)
END = START + timedelta(seconds=600)


def spec(gpus: int = 1, **gates: Any) -> PipelineSpec:
    return PipelineSpec.model_validate({"resources": {"gpusPerWorker": gpus}, "gates": gates,
                                        "data": {"source": "builtin:digits"}})


def evidence(uuids: list[list[str]] | None = None, window: bool = True, **fields: Any) -> Evidence:
    """A job whose rank i recorded ``uuids[i]`` on host node-i."""
    records = [RankGpus(rank=i, host=f"node-{i}", device="cuda:0", gpu_uuids=u)
               for i, u in enumerate(uuids or [])]
    timings = {"started_at": START.isoformat(), "finished_at": END.isoformat()} if window else {}
    return Evidence(job_name="digits-baseline-1", config_hash="h", status="completed", completed=True,
                    epochs_planned=1, gpus=records, timings=timings, **fields)


def check(gpu: GpuMeasurement | None, s: PipelineSpec | None = None, ev: Evidence | None = None):
    return check_gpu_utilization(ev or evidence(), gpu, s or spec())


# ------------------------------------------------------------------ the gate

def test_a_gpu_job_measured_high_passes_and_low_fails() -> None:
    high = check(GpuMeasurement(util_mean=85.0, sm_active=0.9))
    assert (high.result, high.value, high.threshold) == ("pass", 85.0, 60)
    assert "SM activity 0.90" in high.message
    low = check(GpuMeasurement(util_mean=20.0, sm_active=0.15))
    assert (low.result, low.value) == ("fail", 20.0)


@pytest.mark.parametrize(("gpu", "needle"), [
    (GpuMeasurement.absent(NO_UUIDS), "recorded no GPU UUID"),
    (GpuMeasurement.absent("no DCGM_FI_DEV_GPU_UTIL series for the job's GPU(s) GPU-x"), "no DCGM_FI_DEV_GPU_UTIL series"),
    (GpuMeasurement.unreachable("Prometheus at http://prom:9090 unreachable: [Errno 111] Connection refused"),
     "Prometheus at http://prom:9090 unreachable"),
    (GpuMeasurement.absent(NO_PROMETHEUS), "no Prometheus configured"),
    (None, "no NVML utilization sample"),  # the local runner: the job's own NVML mean is missing
])
def test_no_evidence_no_pass_for_a_job_that_requested_gpus(gpu: GpuMeasurement | None, needle: str) -> None:
    result = check(gpu)
    assert result.result == "fail" and result.mandatory
    assert "No evidence, no pass" in result.message and needle in result.message, result.message


def test_turned_off_by_the_spec_says_so_and_is_not_a_pass() -> None:
    off = spec(gpuUtilization={"enabled": False, "reason": "A100 shared with inference; measured by hand"})
    for gpu in (GpuMeasurement(util_mean=5.0), GpuMeasurement.unreachable("down"), None):
        result = check(gpu, off)
        assert (result.result, result.value) == ("skip", "turned-off")
        assert "Turned off by spec.gates.gpuUtilization.enabled: false" in result.message
        assert "A100 shared with inference" in result.message
        assert result.evidence == "spec.gates.gpuUtilization"


def test_turning_it_off_needs_a_reason_naming_the_field() -> None:
    with pytest.raises(ValidationError, match=r"spec\.gates\.gpuUtilization\.reason is required"):
        spec(gpuUtilization={"enabled": False})
    with pytest.raises(ValidationError, match="reason is required"):
        spec(gpuUtilization={"enabled": False, "reason": "   "})
    assert spec().gates.gpu_utilization.enabled


def test_no_gpu_requested_is_not_applicable_not_a_pass() -> None:
    for gpu in (GpuMeasurement(util_mean=99.0), GpuMeasurement.absent("no series"), None):
        result = check(gpu, spec(gpus=0))
        assert (result.result, result.value) == ("skip", "not-applicable")
        assert "requested no GPU" in result.message


def test_sm_activity_near_zero_fails_a_busy_reading_and_poor_warns() -> None:
    stuck = check(GpuMeasurement(util_mean=99.0, sm_active=0.03))
    assert stuck.result == "fail" and "NCCL" in stuck.message and f"< {SM_ACTIVE_STUCK}" in stuck.message
    poor = check(GpuMeasurement(util_mean=99.0, sm_active=0.3))
    assert poor.result == "warn" and "SM activity 0.30 is poor" in poor.message
    unpublished = check(GpuMeasurement(util_mean=99.0))
    assert unpublished.result == "pass" and "not published" in unpublished.message


def test_the_evidence_names_the_gpus_hosts_and_window() -> None:
    gpu = GpuMeasurement(util_mean=70.0, sm_active=0.7, source="prometheus (http://p): DCGM_FI_DEV_GPU_UTIL",
                         gpus=(f"{UUID_A} (rank 0 on node-0)",), window="2026-12-02T06:00:00+00:00 .. x")
    result = check(gpu)
    assert UUID_A in result.evidence and "node-0" in result.evidence and "window 2026-12-02T06:00" in result.evidence


# --------------------------------------------------------------- the query

def test_the_default_query_selects_the_recorded_uuids_over_the_window() -> None:
    source = PromQLGpuSource("http://prometheus:9090")
    util, sm = source.queries("ml", "digits", "raysubmit_x", START, END, [UUID_A, UUID_B])
    assert util == ('avg(avg by (UUID) (avg_over_time(DCGM_FI_DEV_GPU_UTIL{UUID=~"'
                    f'{UUID_A}|{UUID_B}"}}[600s])))')
    assert sm is not None and "DCGM_FI_PROF_SM_ACTIVE" in sm and UUID_A in sm
    assert "pod" not in util and "namespace" not in util  # works for RayJobs and shared clusters alike
    assert "{uuid_regex}" in OperatorSettings().gpu_query


@pytest.mark.parametrize("bad", [
    ".*", "GPU-.*", f"{UUID_A}|.*", f'{UUID_A}"}} or vector(100) #', "GPU-6f2ba7ff", f"{UUID_A}\n",
    "gpu-6f2ba7ff-5c3a-4d1e-9b7a-0c1d2e3f4a5b-extra", "",
])
def test_a_value_that_is_not_a_uuid_never_reaches_a_query(bad: str) -> None:
    with pytest.raises(InvalidUuid, match="not a GPU UUID"):
        valid_uuid(bad)
    with pytest.raises(InvalidUuid):
        PromQLGpuSource("http://p").queries("ml", "d", "j", START, END, [UUID_A, bad])
    # Through the evidence: no HTTP request is made (the URL is not even a server), the check fails naming it.
    measured = PromQLGpuSource("http://192.0.2.1:9").measure_evidence("ml", "d", evidence([[UUID_A], [bad]]))
    assert measured.util_mean is None and measured.error is None
    assert measured.reason is not None and "not a GPU UUID" in measured.reason
    result = check(measured)
    assert result.result == "fail" and "not a GPU UUID" in result.message


def test_uuid_regex_is_an_exact_alternation() -> None:
    import re

    pattern = re.compile(f"^(?:{uuid_regex([UUID_A, f'MIG-{UUID_B[4:]}'])})$")
    assert pattern.match(UUID_A) and pattern.match(f"MIG-{UUID_B[4:]}")
    assert not pattern.match(UUID_B) and not pattern.match(UUID_A + "0")
    with pytest.raises(InvalidUuid, match="more than"):
        uuid_regex([UUID_A] * 1025)


def test_measure_evidence_without_uuids_window_or_prometheus_says_which() -> None:
    source = PromQLGpuSource("http://192.0.2.1:9")  # never contacted: each case stops before a request
    assert source.measure_evidence("ml", "d", evidence([])).reason == NO_UUIDS
    assert source.measure_evidence("ml", "d", evidence([[]])).reason == NO_UUIDS
    assert source.measure_evidence("ml", "d", evidence([[UUID_A]], window=False)).reason == NO_WINDOW
    assert PromQLGpuSource(None).measure_evidence("ml", "d", evidence([[UUID_A]])).reason == NO_PROMETHEUS


def test_a_pod_based_template_still_works_without_uuids() -> None:
    template = 'avg(avg_over_time(DCGM_FI_DEV_GPU_UTIL{{exported_namespace="{namespace}", exported_pod=~"{pod_regex}"}}[{window}s]))'
    source = PromQLGpuSource("http://p", template, None)
    util, sm = source.queries("ml", "digits", "digits-baseline-1", START, END)
    assert util == ('avg(avg_over_time(DCGM_FI_DEV_GPU_UTIL{exported_namespace="ml", '
                    'exported_pod=~"digits-baseline-1-.*"}[600s]))') and sm is None
    with pytest.raises(ValueError, match="uuid_regex"):
        PromQLGpuSource("http://p", 'DCGM_FI_DEV_GPU_UTIL{{UUID=~"{uuids}"}}')


# ------------------------------------------------------ Planning's preflight

def test_a_gpu_pipeline_whose_preflight_ran_on_the_cpu_fails_planning() -> None:
    report = PreflightReport(ok=True, loss=2.3, loss_finite=True, grads_finite=True, device="cpu",
                             batch_shape=[8, 3, 8, 8])
    assert check_preflight(report, "01_planning/preflight.json").result == "pass"  # CPU pipeline
    gpu = check_preflight(report, "01_planning/preflight.json", gpus_requested=1)
    assert gpu.result == "fail" and "gpusPerWorker is 1" in gpu.message and "'cpu'" in gpu.message
    on_gpu = report.model_copy(update={"device": "cuda"})
    assert check_preflight(on_gpu, "p", gpus_requested=1).result == "pass"


# ------------------------------------- where a GPU pipeline's preflight runs

def _job_file(tmp_path, action: str, gpus: int):
    from trainpipe_trainer.contract.job_config import JobConfig

    extra = {"evaluate": {"checkpoint": "best_model.pt"}} if action == "evaluate" else {}
    config = JobConfig.model_validate({"name": "j", "runDir": str(tmp_path / action), "action": action,
                                       "resources": {"gpusPerWorker": gpus}, **extra})
    path = tmp_path / f"{action}-{gpus}.yaml"
    path.write_text(config.to_yaml(), encoding="utf-8")
    return path


def test_a_gpu_pipelines_one_process_jobs_ask_ray_for_a_gpu_driver(tmp_path) -> None:
    """Otherwise Ray runs the preflight on a CPU-only head, where it would find
    no CUDA and (rightly) fail Planning."""
    from trainpipe_operator.kuberay.rayjob import build_rayjob
    from trainpipe_operator.pipeline.launchers import entrypoint_gpus
    from trainpipe_operator.spec.pipeline import ResourcesSpec

    assert entrypoint_gpus(_job_file(tmp_path, "preflight", 2)) == 1.0
    assert entrypoint_gpus(_job_file(tmp_path, "evaluate", 1)) == 1.0
    assert entrypoint_gpus(_job_file(tmp_path, "train", 1)) == 0.0  # Ray Train workers request their own
    assert entrypoint_gpus(_job_file(tmp_path, "preflight", 0)) == 0.0
    owner = {"apiVersion": "trainpipe.io/v1alpha1", "kind": "TrainingPipeline", "name": "d", "uid": "u"}
    storage = {"claimName": "c", "mountPath": "/artifacts"}
    args = ("d-planning-1", "ml", owner, "img", "/artifacts/job.yaml", ResourcesSpec(gpus_per_worker=1), storage, None)
    assert build_rayjob(*args, entrypoint_gpus=1.0)["spec"]["entrypointNumGpus"] == 1.0
    assert "entrypointNumGpus" not in build_rayjob(*args)["spec"]


def test_the_charts_query_values_reach_the_operators_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    from tests.chart_render import one, render

    util = 'avg(avg_over_time(DCGM_FI_DEV_GPU_UTIL{{gpu_uuid=~"{uuid_regex}"}}[{window}s]))'
    sm = 'avg(avg_over_time(DCGM_FI_PROF_SM_ACTIVE{{gpu_uuid=~"{uuid_regex}"}}[{window}s]))'
    deployment = one(render(sets={"operator.prometheusUrl": "http://prom:9090", "operator.gpuQuery": util,
                                  "operator.gpuSmQuery": sm}), "Deployment")
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    for item in container["env"]:
        monkeypatch.setenv(item["name"], item.get("value", ""))
    settings = OperatorSettings()
    assert (settings.gpu_query, settings.gpu_sm_query) == (util, sm)
    queries = PromQLGpuSource(settings.prometheus_url, settings.gpu_query, settings.gpu_sm_query).queries(
        "ml", "d", "j", START, END, [UUID_A])
    assert queries == (f'avg(avg_over_time(DCGM_FI_DEV_GPU_UTIL{{gpu_uuid=~"{UUID_A}"}}[600s]))',
                       f'avg(avg_over_time(DCGM_FI_PROF_SM_ACTIVE{{gpu_uuid=~"{UUID_A}"}}[600s]))')
