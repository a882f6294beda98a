"""Operator scale: N TrainingPipelines created at once against the real
kube-apiserver; the operator runs as its own process with a runtime whose
jobs complete at once (bench/instant_runtime.py), so this measures the
control loop. Reports p50/p95 from creation to the first status write and to
Succeeded (timestamps from a watch), and the operator's peak RSS.

    python bench/operator_scale.py [--counts 500] [--rounds 3] [--profile]

Three modes side by side in each round: ``process`` (as shipped: reconciles
in a worker process), ``thread`` (reconciles in a thread of the operator's
process, the design before) and ``floor`` (every reconcile a no-op; the
timer still waits for a creation burst's first statuses, as shipped). Writes
bench/results/operator_scale.json with every run and the medians. Targets:
first status p95 at 500 <= 1.25x the floor's, peak RSS <= 300 MiB.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
RESULTS = REPO / "bench" / "results" / "operator_scale.json"

from tests.integration.operator_harness import (  # noqa: E402
    CRD_FILE,
    free_port,
    kubectl,
    wait_established,
    wait_for,
)

from trainpipe_operator.devcluster import ControlPlane, find_assets  # noqa: E402
from trainpipe_operator.rbac import cluster_role, cluster_role_binding  # noqa: E402

TEMPLATE_SPEC = {
    "data": {"source": "builtin:digits", "imageSize": 8, "batchSize": 64},
    "target": {"metric": "val_acc", "value": 0.5},
    "baseline": {"epochs": 2, "lr": 0.003},
    "finalization": {"epochs": 2, "patience": 2},
}


def make_template(workdir: Path) -> Path:
    """One real local run whose job outputs every instant job links in."""
    manifest = workdir / "template.yaml"
    manifest.write_text(yaml.safe_dump({"apiVersion": "trainpipe.io/v1alpha1", "kind": "TrainingPipeline",
                                        "metadata": {"name": "template"}, "spec": TEMPLATE_SPEC}))
    run_dir = workdir / "template-run"
    trainpipe = Path(sys.executable).parent / "trainpipe"
    subprocess.run([str(trainpipe), "run", str(manifest), "--run-dir", str(run_dir), "--quiet"], check=True)
    return run_dir


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def peak_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def watch(kubeconfig: Path, seen: dict[str, dict[str, float]], stop: threading.Event) -> None:
    """Timestamp each pipeline's first status and its Succeeded, as a client sees them."""
    from kubernetes import client, config
    from kubernetes import watch as kwatch

    api = client.CustomObjectsApi(config.new_client_from_config(str(kubeconfig)))
    # Resume from the last resourceVersion: a fresh list on every reconnect
    # would miss the transitions in between and report them late.
    version = api.list_namespaced_custom_object("trainpipe.io", "v1alpha1", "default",
                                                "trainingpipelines")["metadata"]["resourceVersion"]
    while not stop.is_set():
        for event in kwatch.Watch().stream(api.list_namespaced_custom_object, "trainpipe.io", "v1alpha1", "default",
                                           "trainingpipelines", resource_version=version, timeout_seconds=30):
            now = time.time()
            obj = event["object"]
            version = obj["metadata"]["resourceVersion"]
            name = obj["metadata"]["name"]
            phase = (obj.get("status") or {}).get("phase")
            marks = seen.setdefault(name, {})
            if phase and "first_status" not in marks:
                marks["first_status"] = now
            if phase and phase != "Pending" and "first_transition" not in marks:
                marks["first_transition"] = now
            if phase == "Succeeded" and "succeeded" not in marks:
                marks["succeeded"] = now
                decided = [d.get("phase") for d in obj["status"].get("decisions") or []]
                marks["decisions"] = len(decided)
                marks["repeated"] = len(decided) != len(set(decided))  # a phase decided twice: run twice
            if stop.is_set():
                break


def create_all(kubeconfig: Path, docs: list[dict], created_at: dict[str, float]) -> None:
    """Create every pipeline at once (8 client threads), noting when the API
    server acknowledged each: latencies count from there, not from the
    start of the batch."""
    from concurrent.futures import ThreadPoolExecutor

    from kubernetes import client, config

    api = client.CustomObjectsApi(config.new_client_from_config(str(kubeconfig)))

    def create(doc: dict) -> None:
        api.create_namespaced_custom_object("trainpipe.io", "v1alpha1", "default", "trainingpipelines", doc)
        created_at[doc["metadata"]["name"]] = time.time()

    with ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(create, docs))


MODES = {  # name: (reconcile processes, timer on, --api-connections)
    "process": (1, True, 64),   # as shipped: reconciles in a worker process
    "thread": (0, True, 64),    # reconciles in a thread of the operator's process (before)
    "floor": (1, False, 64),    # reconciles no-ops: kopf and the API server alone
    "uncapped": (1, True, 0),   # as shipped but kopf's own unbounded API session (before); on demand only
}
DEFAULT_MODES = ["process", "thread", "floor"]


def process_tree(pid: int) -> list[int]:
    """The operator and its child processes (the reconcile workers)."""
    pids = [pid]
    for task in Path(f"/proc/{pid}/task").iterdir():
        children = (task / "children").read_text().split()
        pids += [int(c) for c in children]
    return pids


def cpu_seconds(pids: list[int]) -> float:
    """user + system CPU of these processes (clock ticks from /proc)."""
    total = 0
    for pid in pids:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / os.sysconf("SC_CLK_TCK")


def run_count(plane: ControlPlane, template: Path, count: int, workdir: Path, profile: bool,
              max_wait: float | None, mode: str, round_: int) -> dict:
    processes, reconcile, connections = MODES[mode]
    artifacts = workdir / f"artifacts-{count}-{mode}-{round_}"
    log_path = workdir / f"operator-{count}-{mode}-{round_}.log"
    operator = subprocess.Popen(
        [sys.executable, str(REPO / "bench" / "instant_runtime.py"), str(template),
         *([] if reconcile else ["--no-reconcile"]), "--", "operator",
         "--kubeconfig", str(plane.operator_kubeconfig), "--artifact-root", str(artifacts),
         "--metrics-port", "0", "--liveness-port", str(free_port()), "--reconcile-processes", str(processes),
         "--api-connections", str(connections),
         # floor: one no-op tick per pipeline, not one a second
         "--poll-seconds", "1" if reconcile else "3600"],
        stdout=log_path.open("w"), stderr=subprocess.STDOUT)
    time.sleep(5)  # kopf connects and starts watching
    if profile and reconcile:  # py-spy, if installed in this environment: where the operator's time goes
        subprocess.Popen([str(Path(sys.executable).parent / "py-spy"), "record", "-p", str(operator.pid), "-d", "40",
                          "--subprocesses", "--format", "raw",
                          "-o", str(workdir / f"profile-{count}-{mode}-{round_}.txt")],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    seen: dict[str, dict[str, float]] = {}
    stop = threading.Event()
    watcher = threading.Thread(target=watch, args=(plane.kubeconfig, seen, stop), daemon=True)
    watcher.start()
    names = [f"scale-{mode}-{round_}-{count}-{i:04d}" for i in range(count)]
    docs = [{"apiVersion": "trainpipe.io/v1alpha1", "kind": "TrainingPipeline", "metadata": {"name": n},
             "spec": TEMPLATE_SPEC} for n in names]
    created_at: dict[str, float] = {}
    cpu_before = cpu_seconds(process_tree(operator.pid))
    batch_start = time.time()
    create_all(plane.kubeconfig, docs, created_at)
    created_done = time.time()
    error = None
    try:
        if not reconcile:  # nothing will succeed: wait for the first statuses only
            wait_for(f"{count} first statuses", lambda: sum(1 for n in names if "first_status" in seen.get(n, {})) == count,
                     timeout=max_wait or 60 + count, interval=1)
        else:
            wait_for(f"{count} pipelines Succeeded",
                     lambda: sum(1 for n in names if "succeeded" in seen.get(n, {})) == count,
                     timeout=max_wait or 60 + 3 * count, interval=1)
    except AssertionError as exc:
        error = f"{exc}; operator log: {log_path}"
    finally:
        tree = process_tree(operator.pid)
        cpu = cpu_seconds(tree) - cpu_before
        rss = peak_rss_mib(operator.pid)
        worker_rss = [peak_rss_mib(pid) for pid in tree[1:]]
        stop.set()
        # Delete while this operator still runs (its finalizer lets go), so the
        # next run's operator starts on an empty cluster.
        kubectl(plane.kubeconfig, "delete", "tp", "--all", "--wait=false", check=False)
        wait_for("pipelines deleted", lambda: not kubectl(plane.kubeconfig, "get", "tp", "-o", "name").stdout.strip(),
                 timeout=300, interval=2)
        operator.terminate()
        operator.wait(timeout=60)
    first = [seen[n]["first_status"] - created_at[n] for n in names if "first_status" in seen.get(n, {})]
    done = [seen[n]["succeeded"] - created_at[n] for n in names if "succeeded" in seen.get(n, {})]
    transitions = sum(int(seen[n].get("decisions", 0)) for n in names)
    # Reconciles that ran while first statuses were still arriving (they wait for them: controller/arrivals.py).
    last_first = max((seen[n]["first_status"] for n in names if "first_status" in seen.get(n, {})), default=0.0)
    early = sum(1 for n in names if seen.get(n, {}).get("first_transition", float("inf")) < last_first)
    run_dirs = sorted(p.name for p in (artifacts / "default").glob("scale-*")) if (artifacts / "default").exists() else []
    duplicated = [n for n in names if sum(1 for d in run_dirs if d.startswith(n + "-")) > 1]
    duplicated += [n for n in names if seen.get(n, {}).get("repeated")]
    return {
        "count": count,
        "mode": mode,
        "round": round_,
        "error": error,
        "create_seconds": created_done - batch_start,
        "with_first_status": len(first), "succeeded": len(done),
        "stuck": 0 if not reconcile else count - len(done),
        "duplicated": sorted(set(duplicated)),
        "first_status_p50_s": statistics.median(first) if first else None,
        "first_status_p95_s": percentile(first, 0.95) if first else None,
        "succeeded_p50_s": statistics.median(done) if done else None,
        "succeeded_p95_s": percentile(done, 0.95) if done else None,
        "operator_cpu_s": cpu,
        "phase_transitions": transitions,
        "transitions_before_last_first_status": early,
        "transitions_per_cpu_s": transitions / cpu if reconcile and cpu > 0 else None,
        "operator_peak_rss_mib": rss,
        "worker_peak_rss_mib": worker_rss,
    }


def medians(runs: list[dict], count: int) -> dict[str, dict]:
    """Per mode, the median over the rounds of each figure."""
    keys = ("first_status_p50_s", "first_status_p95_s", "succeeded_p50_s", "succeeded_p95_s", "operator_cpu_s",
            "transitions_per_cpu_s", "operator_peak_rss_mib")
    out: dict[str, dict] = {}
    for mode in MODES:
        mine = [r for r in runs if r["mode"] == mode and r["count"] == count]
        out[mode] = {k: statistics.median([r[k] for r in mine if r[k] is not None])
                     for k in keys if any(r[k] is not None for r in mine)}
        out[mode]["worker_peak_rss_mib"] = max((max(r["worker_peak_rss_mib"], default=0) for r in mine), default=0)
    floor = out["floor"].get("first_status_p95_s")
    for mode in ("process", "thread", "uncapped"):
        if floor and out[mode].get("first_status_p95_s") is not None:
            out[mode]["first_status_p95_over_floor"] = out[mode]["first_status_p95_s"] / floor
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--counts", type=int, nargs="+", default=[500])
    parser.add_argument("--rounds", type=int, default=3, help="each mode this many times, side by side (default 3)")
    parser.add_argument("--modes", nargs="+", default=DEFAULT_MODES, choices=list(MODES))
    parser.add_argument("--max-wait", type=float, help="seconds to wait for Succeeded (default: 60 + 3 per pipeline)")
    parser.add_argument("--profile", action="store_true",
                        help="first, one run per mode sampled with py-spy (if installed), not in the medians; "
                             "summarize with bench/profile_summary.py")
    parser.add_argument("--no-warmup", dest="warmup", action="store_false",
                        help="skip the first, uncounted floor run (the first run on a new API server was 2 to 4 "
                             "times slower than the same mode later in the runs of 2026-12-02 and -03)")
    parser.add_argument("--workdir", type=Path, help="keep the operator logs and artifacts here (default: a temp dir)")
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args()
    runs: list[dict] = []
    profiled: list[dict] = []
    warmup: list[dict] = []

    def write() -> None:  # after every run: an interrupted benchmark keeps what it measured
        counts = sorted({r["count"] for r in runs})
        result = {"medians": {str(c): medians(runs, c) for c in counts}, "runs": runs, "profiled_runs": profiled,
                  "warmup_runs": warmup,
                  "targets": {"first_status_p95_over_floor_at_500": 1.25, "operator_peak_rss_mib": 300},
                  "note": NOTE, "machine": f"{os.cpu_count()} CPUs; API server, etcd, operator and this client "
                                           "share them"}
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(json.dumps(result, indent=2))

    with tempfile.TemporaryDirectory() as tmp:
        workdir = args.workdir or Path(tmp)
        workdir.mkdir(parents=True, exist_ok=True)
        template = make_template(workdir)
        with ControlPlane(find_assets(), workdir / "control-plane") as plane:
            kubectl(plane.kubeconfig, "apply", "-f", str(CRD_FILE))
            wait_established(plane.kubeconfig, "trainingpipelines.trainpipe.io")
            docs = [cluster_role(), cluster_role_binding({"kind": "User", "name": "trainpipe-operator"})]
            kubectl(plane.kubeconfig, "apply", "-f", "-", input=yaml.safe_dump_all(docs))
            for count in args.counts:
                if args.warmup:  # not in the medians: a new API server's first 500 objects
                    warmup.append(run_count(plane, template, count, workdir, False, args.max_wait, "floor", -2))
                    print(json.dumps(warmup[-1]), flush=True)
                if args.profile:  # a run of its own: py-spy's sampling slows what it measures
                    for mode in [m for m in args.modes if MODES[m][1]]:  # the floor runs no reconcile
                        profiled.append(run_count(plane, template, count, workdir, True, args.max_wait, mode, -1))
                        print(json.dumps(profiled[-1]), flush=True)
                for round_ in range(args.rounds):  # the modes side by side in each round
                    for mode in args.modes:
                        runs.append(run_count(plane, template, count, workdir, False, args.max_wait, mode, round_))
                        print(json.dumps(runs[-1]), flush=True)
                        write()
    write()
    print(json.dumps(json.loads(args.output.read_text())["medians"], indent=2))


NOTE = ("instant runtime (bench/instant_runtime.py): the control loop, not training. mode process: the operator as "
        "shipped, reconciles in one worker process; mode thread: reconciles in a thread of the operator's process "
        "(--reconcile-processes 0, the design before); mode floor: every reconcile a no-op (the timer waits for a "
        "creation burst's first statuses as shipped), so only kopf and the API server write the first status (the "
        "lower bound on this machine); mode uncapped (on demand): as process but with "
        "kopf's own unbounded API session (--api-connections 0). operator_cpu_s: the operator's and its "
        "workers' CPU from the first create to the last Succeeded; medians over the rounds")


if __name__ == "__main__":
    main()
