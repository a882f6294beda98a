"""The kind suite (``hack/kind-e2e.sh``, ``make kind-e2e``) as a test.

The script builds both images, installs KubeRay's operator and the trainpipe
chart on a one-node kind cluster, runs ``examples/digits.yaml`` with
``runtime.type: rayjob`` to Succeeded and checks that ``helm uninstall``
leaves nothing behind. It exits 3 with ``kind-e2e: skipped: <reason>`` when a
prerequisite is missing (no Docker engine, no kind, no KUBERAY_CHART): this
test then skips with that reason, so a plain ``pytest`` reports it skipped
where Docker does not run and runs it for real where it does.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "hack" / "kind-e2e.sh"
SKIPPED = 3
SKIP_PREFIX = "kind-e2e: skipped: "
# Building the trainer image and a cluster take a while on top of the
# pipeline's own limit (KIND_TIMEOUT, 3600 s by default).
TIMEOUT_S = int(os.environ.get("KIND_TIMEOUT", "3600")) + 1800


def tail(text: str, lines: int = 200) -> str:
    return "\n".join(text.splitlines()[-lines:])


def skip_reason(output: str) -> str | None:
    reasons = [line[len(SKIP_PREFIX):].strip() for line in output.splitlines() if line.startswith(SKIP_PREFIX)]
    return reasons[-1] if reasons else None


def run_script(log: Path) -> tuple[int, str]:
    env = dict(os.environ, PYTHON=sys.executable)
    with log.open("w", encoding="utf-8") as out:
        proc = subprocess.Popen(
            ["bash", str(SCRIPT)],
            cwd=REPO,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            proc.wait(timeout=TIMEOUT_S)
        except subprocess.TimeoutExpired:
            # TERM to the whole group: the script's trap still deletes the cluster.
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=300)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
            text = log.read_text(encoding="utf-8", errors="replace")
            pytest.fail(f"{SCRIPT.name} ran past {TIMEOUT_S}s; its output ({log}) ends:\n{tail(text)}")
    return proc.returncode, log.read_text(encoding="utf-8", errors="replace")


def test_skip_reason_is_read_from_the_script_output() -> None:
    # The wrapper's parsing, independent of Docker: the reason is the line's rest.
    output = "kind-e2e: creating cluster x\nkind-e2e: skipped: no Docker engine (docker info failed)\nkind-e2e: deleting cluster x\n"
    assert skip_reason(output) == "no Docker engine (docker info failed)"
    assert skip_reason("kind-e2e: passed\n") is None


@pytest.mark.kind
@pytest.mark.slow
@pytest.mark.timeout(TIMEOUT_S + 600)
def test_kind_e2e(tmp_path: Path) -> None:
    assert SCRIPT.is_file(), f"{SCRIPT} is missing"
    code, output = run_script(tmp_path / "kind-e2e.log")
    if code == SKIPPED:
        reason = skip_reason(output)
        assert reason, f"{SCRIPT.name} exited {SKIPPED} (skipped) without a reason line:\n{tail(output)}"
        pytest.skip(f"kind suite: {reason}")
    assert code == 0, f"{SCRIPT.name} exited {code}; its output ends:\n{tail(output)}"
    assert "kind-e2e: passed" in output.splitlines(), tail(output)
