"""The gpu-utilization check against the real Prometheus scraping a stand-in
for NVIDIA's dcgm-exporter, labelled as dcgm-exporter labels its series
(``gpu``, ``UUID``, ``device``, ``modelName``, ``Hostname``, and the
``namespace``/``pod``/``container`` it maps a GPU to).

The jobs' GPUs are found by the UUIDs their evidence names, not by pod name:
the pods here belong to a shared RayCluster and a RayJob named from its
submission id, nothing like the pipeline ("digits"). A pod that *is* named
like the pipeline holds a busy GPU no job of the pipeline used: selecting by
name would have passed the gate on it."""

from __future__ import annotations

import socket
import time
from datetime import datetime, timedelta, timezone

import pytest
from prometheus_client import CollectorRegistry, Gauge, start_http_server

from trainpipe_operator.gates.execution import check_gpu_utilization
from trainpipe_operator.gates.inputs import GpuMeasurement
from trainpipe_operator.prometheus.gpu import PromQLGpuSource
from trainpipe_operator.spec.pipeline import PipelineSpec
from trainpipe_trainer.contract.evidence import Evidence, RankGpus

from .prometheus_server import free_port, running_prometheus

pytestmark = pytest.mark.integration

NS = "ml"
LOW = "GPU-11111111-aaaa-4bbb-8ccc-000000000001"
HIGH_A = "GPU-22222222-aaaa-4bbb-8ccc-000000000002"
HIGH_B = "GPU-33333333-aaaa-4bbb-8ccc-000000000003"
STUCK = "GPU-44444444-aaaa-4bbb-8ccc-000000000004"
DECOY = "GPU-55555555-aaaa-4bbb-8ccc-000000000005"  # in a pod named like the pipeline
OTHER_TEAM = "GPU-66666666-aaaa-4bbb-8ccc-000000000006"
UNSCRAPED = "GPU-77777777-aaaa-4bbb-8ccc-000000000007"  # a job's GPU the exporter never published
SHARED_WORKER = "raycluster-shared-gpu-group-worker-"
LABELS = ["gpu", "UUID", "device", "modelName", "Hostname", "container", "namespace", "pod"]
# UUID -> (gpu index, host, namespace, pod, utilization %, SM activity or None)
GPUS = {
    LOW: ("0", "node-a", "ray", SHARED_WORKER + "7k2xq", 20.0, 0.18),
    HIGH_A: ("0", "node-b", NS, "rayjob-raysubmit-8f3k2-raycluster-x7z-gpu-worker-m4n5p", 85.0, 0.85),
    HIGH_B: ("1", "node-c", NS, "rayjob-raysubmit-8f3k2-raycluster-x7z-gpu-worker-q1w2e", 75.0, 0.75),
    STUCK: ("1", "node-a", "ray", SHARED_WORKER + "7k2xq", 99.0, 0.02),
    DECOY: ("0", "node-d", NS, "digits-baseline-1-abcde-workers-worker-zzzzz", 99.0, 0.9),
    OTHER_TEAM: ("0", "node-e", "team-b", "team-b-trainer-0", 97.0, None),
}
GPU_SPEC = PipelineSpec.model_validate({"resources": {"gpusPerWorker": 1}, "data": {"source": "builtin:digits"}})


@pytest.fixture(scope="module")
def prometheus(tmp_path_factory):
    registry = CollectorRegistry()
    util = Gauge("DCGM_FI_DEV_GPU_UTIL", "GPU utilization (in %).", LABELS, registry=registry)
    sm = Gauge("DCGM_FI_PROF_SM_ACTIVE", "Ratio of cycles an SM has at least 1 warp assigned.", LABELS,
               registry=registry)
    for uuid, (gpu, host, namespace, pod, u, s) in GPUS.items():
        labels = (gpu, uuid, f"nvidia{gpu}", "NVIDIA H100 80GB HBM3", host, "ray-worker", namespace, pod)
        util.labels(*labels).set(u)
        if s is not None:
            sm.labels(*labels).set(s)
    server, thread = start_http_server(free_port(), addr="127.0.0.1", registry=registry)
    try:
        with running_prometheus([f"127.0.0.1:{server.server_port}"], tmp_path_factory.mktemp("prom"),
                                job="dcgm") as prom:
            prom.wait_for("DCGM_FI_DEV_GPU_UTIL", lambda r: len(r) == len(GPUS), timeout=30)
            # Two scrapes at least: a window with more than one sample.
            prom.wait_for(f'count_over_time(DCGM_FI_DEV_GPU_UTIL{{UUID="{LOW}"}}[1m]) >= 2', timeout=30)
            yield prom
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def job_evidence(*ranks: list[str], minutes_ago: float = 0.0, seconds: float = 60.0) -> Evidence:
    """A finished job whose rank i recorded the UUIDs ``ranks[i]``."""
    end = datetime.now(timezone.utc) - timedelta(minutes=minutes_ago)
    records = [RankGpus(rank=i, host=f"host-{i}", device="cuda:0", gpu_uuids=u) for i, u in enumerate(ranks)]
    return Evidence(job_name="digits-baseline-1", config_hash="h", status="completed", completed=True,
                    epochs_planned=1, gpus=records,
                    timings={"started_at": (end - timedelta(seconds=seconds)).isoformat(),
                             "finished_at": end.isoformat()})


def gate(source: PromQLGpuSource, ev: Evidence) -> tuple[GpuMeasurement, object]:
    measured = source.measure_evidence(NS, "digits", ev)
    return measured, check_gpu_utilization(ev, measured, GPU_SPEC)


def test_a_gpu_at_20_percent_on_a_shared_cluster_fails_the_gate(prometheus):
    measured, check = gate(PromQLGpuSource(prometheus.url), job_evidence([LOW]))
    assert measured.util_mean == pytest.approx(20.0) and measured.sm_active == pytest.approx(0.18)
    assert check.result == "fail" and check.value == pytest.approx(20.0)
    assert LOW in check.evidence and "DCGM_FI_PROF_SM_ACTIVE" in check.evidence and prometheus.url in check.evidence


def test_two_ranks_gpus_of_a_rayjob_at_85_and_75_pass_at_their_mean(prometheus):
    measured, check = gate(PromQLGpuSource(prometheus.url), job_evidence([HIGH_A], [HIGH_B]))
    assert measured.util_mean == pytest.approx(80.0) and measured.sm_active == pytest.approx(0.80)
    assert check.result == "pass" and check.value == pytest.approx(80.0), check
    assert HIGH_A in check.evidence and HIGH_B in check.evidence and "host-1" in check.evidence


def test_a_busy_reading_with_idle_multiprocessors_fails(prometheus):
    _, check = gate(PromQLGpuSource(prometheus.url), job_evidence([STUCK]))
    assert check.result == "fail" and check.value == pytest.approx(99.0)
    assert "SM activity is 0.02" in check.message and "NCCL" in check.message


def test_no_series_for_the_jobs_gpu_fails_saying_so(prometheus):
    measured, check = gate(PromQLGpuSource(prometheus.url), job_evidence([UNSCRAPED]))
    assert measured.util_mean is None and measured.error is None
    assert check.result == "fail"
    assert "No evidence, no pass" in check.message and f"no DCGM_FI_DEV_GPU_UTIL series for the job's GPU(s) {UNSCRAPED}" \
        in check.message


def test_a_window_before_the_series_existed_has_no_series(prometheus):
    _, check = gate(PromQLGpuSource(prometheus.url), job_evidence([HIGH_A], minutes_ago=120))
    assert check.result == "fail" and "no DCGM_FI_DEV_GPU_UTIL series" in check.message


def test_no_uuid_recorded_fails_saying_so(prometheus):
    _, check = gate(PromQLGpuSource(prometheus.url), job_evidence([]))
    assert check.result == "fail" and "recorded no GPU UUID" in check.message


def test_a_regex_in_the_evidence_selects_nothing_and_fails(prometheus):
    """A job that writes ``.*`` as its UUID would, unescaped, average every GPU
    in the cluster (97-99% busy ones included) and pass."""
    (everything,) = prometheus.query('count(DCGM_FI_DEV_GPU_UTIL{UUID=~".*"})')
    assert float(everything["value"][1]) == len(GPUS)  # unescaped, it would select every GPU
    for forged in (".*", f"{LOW}|{DECOY}", f'{DECOY}"}} or vector(99) #'):
        measured, check = gate(PromQLGpuSource(prometheus.url), job_evidence([forged]))
        assert measured.util_mean is None, forged
        assert check.result == "fail" and "not a GPU UUID" in check.message, check.message


def test_a_pod_named_like_the_pipeline_is_not_the_jobs_gpu(prometheus):
    """The DECOY GPU (99%) sits in a pod named digits-baseline-1-...: the old
    pod-name query would have measured it. The job's own GPU is LOW."""
    measured, check = gate(PromQLGpuSource(prometheus.url), job_evidence([LOW]))
    assert measured.util_mean == pytest.approx(20.0) and check.result == "fail"


def test_a_promql_error_fails_with_the_servers_answer(prometheus):
    broken = 'avg(avg_over_time(DCGM_FI_DEV_GPU_UTIL{{UUID=~"{uuid_regex}"}}[{window}s])'  # unbalanced
    measured, check = gate(PromQLGpuSource(prometheus.url, query_template=broken), job_evidence([HIGH_A]))
    assert measured.error is not None and "HTTP 400" in measured.error and "bad_data" in measured.error
    assert check.result == "fail" and prometheus.url in check.message


def test_a_template_that_also_requires_the_pipelines_namespace(prometheus):
    """Where dcgm-exporter maps GPUs to pods and every job runs in its
    pipeline's namespace (RayJobs), a template can also require the
    namespace: a job then cannot be measured on another namespace's GPU."""
    template = ('avg(avg by (UUID) (avg_over_time(DCGM_FI_DEV_GPU_UTIL'
                '{{UUID=~"{uuid_regex}", namespace="{namespace}"}}[{window}s])))')
    measured, check = gate(PromQLGpuSource(prometheus.url, template, None), job_evidence([HIGH_A], [HIGH_B]))
    assert measured.util_mean == pytest.approx(80.0) and check.result == "pass"
    measured, check = gate(PromQLGpuSource(prometheus.url, template, None), job_evidence([OTHER_TEAM]))
    assert measured.util_mean is None and check.result == "fail"


def test_nothing_listening_fails_as_unreachable_naming_the_url():
    url = f"http://127.0.0.1:{free_port()}"
    measured, check = gate(PromQLGpuSource(url, timeout=2.0), job_evidence([HIGH_A]))
    assert measured.error is not None and url in measured.error and "refused" in measured.error.lower()
    assert check.result == "fail" and "could not be measured" in check.message
    assert f"Prometheus at {url} unreachable" in check.message


def test_silent_server_times_out_as_unreachable():
    with socket.socket() as listener:  # accepts connections (the backlog), never answers
        listener.bind(("127.0.0.1", 0))
        listener.listen(4)
        url = f"http://127.0.0.1:{listener.getsockname()[1]}"
        started = time.monotonic()
        measured, check = gate(PromQLGpuSource(url, timeout=0.5), job_evidence([HIGH_A]))
    assert time.monotonic() - started < 10
    assert measured.error is not None and url in measured.error
    assert "timed out" in measured.error or "did not answer" in measured.error
    assert check.result == "fail"


def test_the_operators_gpu_source_measures_by_the_evidences_uuids(prometheus, monkeypatch):
    """What the operator runs for every gate (controller.reconcile): its
    settings, read from the environment the chart sets, into a measurement."""
    from trainpipe_operator.controller.reconcile import prometheus_gpu_source
    from trainpipe_operator.controller.settings import OperatorSettings

    monkeypatch.setenv("TRAINPIPE_PROMETHEUS_URL", prometheus.url)
    monkeypatch.delenv("TRAINPIPE_GPU_QUERY", raising=False)
    monkeypatch.delenv("TRAINPIPE_GPU_SM_QUERY", raising=False)
    measure = prometheus_gpu_source(OperatorSettings(), NS, "digits")
    assert measure is not None
    high = measure(job_evidence([HIGH_A], [HIGH_B]))
    assert high.util_mean == pytest.approx(80.0) and high.sm_active == pytest.approx(0.80)
    assert check_gpu_utilization(job_evidence(), measure(job_evidence([LOW])), GPU_SPEC).result == "fail"
    # A template from the environment (e.g. a renamed label) is the one used; SM off.
    monkeypatch.setenv("TRAINPIPE_GPU_QUERY", 'max(max_over_time(DCGM_FI_DEV_GPU_UTIL{{UUID=~"{uuid_regex}"}}[{window}s]))')
    monkeypatch.setenv("TRAINPIPE_GPU_SM_QUERY", "")
    configured = prometheus_gpu_source(OperatorSettings(), NS, "digits")
    assert configured is not None
    peak = configured(job_evidence([HIGH_A], [HIGH_B]))
    assert peak.util_mean == pytest.approx(85.0) and peak.sm_active is None
    monkeypatch.delenv("TRAINPIPE_PROMETHEUS_URL")
    assert prometheus_gpu_source(OperatorSettings(), NS, "digits") is None
