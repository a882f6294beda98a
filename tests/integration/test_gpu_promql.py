"""``PromQLGpuSource`` against the real Prometheus scraping a tiny stand-in
for NVIDIA's DCGM exporter (``DCGM_FI_DEV_GPU_UTIL{namespace, pod, gpu}``)."""

from __future__ import annotations

import socket
import time
from datetime import datetime, timedelta, timezone

import pytest
from prometheus_client import CollectorRegistry, Gauge, start_http_server

from trainpipe_operator.prometheus.gpu import NO_SERIES, PromQLGpuSource

from .prometheus_server import free_port, running_prometheus

pytestmark = pytest.mark.integration

NS = "ml"
# (namespace, pod, gpu) -> utilization; pods named as KubeRay names a RayJob's.
UTIL = {
    (NS, "digits-baseline-1-qz8vd-workers-worker-4xk2l", "0"): 30.0,
    (NS, "digits-opt-1-m2c7r-workers-worker-p9d3s", "0"): 80.0,
    (NS, "digits-opt-2-h5t1w-workers-worker-a1b2c", "0"): 20.0,
    (NS, "digits-opt-2-h5t1w-workers-worker-d3e4f", "1"): 40.0,
    # Same job name, another namespace: must not leak into "ml".
    ("other", "digits-baseline-1-zzzzz-workers-worker-zzzzz", "0"): 99.0,
}
SM_ACTIVE = {(NS, "digits-baseline-1-qz8vd-workers-worker-4xk2l", "0"): 0.75}


@pytest.fixture(scope="module")
def prometheus(tmp_path_factory):
    registry = CollectorRegistry()
    util = Gauge(
        "DCGM_FI_DEV_GPU_UTIL",
        "GPU utilization (in %).",
        ["namespace", "pod", "gpu"],
        registry=registry,
    )
    sm = Gauge(
        "DCGM_FI_PROF_SM_ACTIVE",
        "Ratio of cycles an SM has at least 1 warp assigned.",
        ["namespace", "pod", "gpu"],
        registry=registry,
    )
    for labels, value in UTIL.items():
        util.labels(*labels).set(value)
    for labels, value in SM_ACTIVE.items():
        sm.labels(*labels).set(value)
    server, thread = start_http_server(free_port(), addr="127.0.0.1", registry=registry)
    port = server.server_port
    try:
        with running_prometheus(
            [f"127.0.0.1:{port}"], tmp_path_factory.mktemp("prom"), job="dcgm"
        ) as prom:
            prom.wait_for("DCGM_FI_DEV_GPU_UTIL", lambda r: len(r) == len(UTIL), timeout=30)
            prom.wait_for("DCGM_FI_PROF_SM_ACTIVE", lambda r: len(r) == len(SM_ACTIVE), timeout=30)
            # Two scrapes at least: a window with more than one sample.
            prom.wait_for(
                'count_over_time(DCGM_FI_DEV_GPU_UTIL{pod=~"digits-opt-1-.*"}[1m]) >= 2', timeout=30
            )
            yield prom
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def window(seconds: float = 60.0) -> tuple[datetime, datetime]:
    end = datetime.now(timezone.utc)
    return end - timedelta(seconds=seconds), end


def test_exporter_at_30(prometheus):
    m = PromQLGpuSource(prometheus.url).measure(NS, "digits", "digits-baseline-1", *window())
    assert m.error is None and m.reason is None
    assert m.util_mean == pytest.approx(30.0)
    assert m.sm_active == pytest.approx(0.75)
    assert prometheus.url in m.source


def test_exporter_at_80(prometheus):
    m = PromQLGpuSource(prometheus.url).measure(NS, "digits", "digits-opt-1", *window())
    assert m.error is None
    assert m.util_mean == pytest.approx(80.0)
    assert m.sm_active is None  # this "exporter" publishes no SM activity for the pod


def test_mean_over_the_jobs_gpus(prometheus):
    m = PromQLGpuSource(prometheus.url).measure(NS, "digits", "digits-opt-2", *window())
    assert m.util_mean == pytest.approx(30.0)


def test_no_series_for_the_pod_is_not_applicable(prometheus):
    m = PromQLGpuSource(prometheus.url).measure(NS, "digits", "digits-final-1", *window())
    assert m.util_mean is None and m.error is None
    assert m.reason == NO_SERIES
    # The namespace is part of the selection (and test_exporter_at_30 shows "other" stays out).
    m = PromQLGpuSource(prometheus.url).measure(
        "ml-staging", "digits", "digits-baseline-1", *window()
    )
    assert m.reason == NO_SERIES


def test_window_before_the_series_existed_is_not_applicable(prometheus):
    end = datetime.now(timezone.utc) - timedelta(hours=2)
    m = PromQLGpuSource(prometheus.url).measure(
        NS, "digits", "digits-baseline-1", end - timedelta(minutes=5), end
    )
    assert m.reason == NO_SERIES


def test_promql_error_is_unreachable_with_the_error(prometheus):
    broken = (
        'avg(avg_over_time(DCGM_FI_DEV_GPU_UTIL{{pod=~"{pod_regex}"}}[{window}s])'  # unbalanced
    )
    m = PromQLGpuSource(prometheus.url, query_template=broken).measure(
        NS, "digits", "digits-opt-1", *window()
    )
    assert m.util_mean is None
    assert m.error is not None
    assert prometheus.url in m.error
    assert "HTTP 400" in m.error and "bad_data" in m.error


def test_nothing_listening_is_unreachable_naming_the_url():
    url = f"http://127.0.0.1:{free_port()}"
    m = PromQLGpuSource(url, timeout=2.0).measure(NS, "digits", "digits-baseline-1", *window())
    assert m.util_mean is None and m.reason is None
    assert m.error is not None
    assert url in m.error
    assert "refused" in m.error.lower()


def test_silent_server_times_out_as_unreachable():
    with socket.socket() as listener:  # accepts connections (the backlog), never answers
        listener.bind(("127.0.0.1", 0))
        listener.listen(4)
        url = f"http://127.0.0.1:{listener.getsockname()[1]}"
        started = time.monotonic()
        m = PromQLGpuSource(url, timeout=0.5).measure(NS, "digits", "digits-baseline-1", *window())
    assert time.monotonic() - started < 10
    assert m.error is not None and url in m.error
    assert "timed out" in m.error or "did not answer" in m.error


def test_no_prometheus_configured():
    m = PromQLGpuSource(None).measure(NS, "digits", "digits-baseline-1", *window())
    assert m.util_mean is None and m.error is None
    assert m.reason == "no Prometheus configured"


def test_template_fields_and_escaping():
    source = PromQLGpuSource("http://prometheus:9090/")
    start = datetime(2026, 1, 10, 9, 0, 0)  # naive: UTC
    util, sm = source.queries(NS, "digits", "raysubmit_4.2", start, start + timedelta(seconds=90.2))
    assert util == (
        'avg(avg_over_time(DCGM_FI_DEV_GPU_UTIL{namespace="ml", pod=~"raysubmit_4\\\\.2-.*"}[91s]))'
    )
    assert sm is not None and sm.startswith("avg(avg_over_time(DCGM_FI_PROF_SM_ACTIVE{")
    with pytest.raises(ValueError, match="str.format"):
        PromQLGpuSource("http://p", query_template='DCGM_FI_DEV_GPU_UTIL{pod=~"{pod_regex}"}')
    with pytest.raises(ValueError, match="before it starts"):
        source.queries(NS, "digits", "j", start, start - timedelta(seconds=1))
