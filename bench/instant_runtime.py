"""The benchmark's runtime: every job "completes at once" by linking in the
outputs of one real run made at the start of the benchmark (a template), so
the operator's control loop (status writes, gates, decisions, reports) is
what gets measured, not training. Bench-only: not part of the product.

Run as ``python bench/instant_runtime.py TEMPLATE_RUN_DIR [--no-reconcile] -- <trainpipe operator args>``.
``--no-reconcile`` makes each reconcile a no-op (the poll timer still waits
for a creation burst's first statuses, as shipped): what is left is kopf and
the API server writing each new pipeline's first status (the floor).
"""

from __future__ import annotations

import functools
import os
import shutil
import sys
from pathlib import Path

from trainpipe_operator.controller import reconcile
from trainpipe_operator.pipeline.launchers import JobOutcome
from trainpipe_trainer.contract.job_config import JobConfig


def _link_unless_written(src: str, dst: str) -> None:
    """The runner has already written the job's request files; keep those."""
    if not os.path.exists(dst):
        os.link(src, dst)


class InstantLauncher:
    def __init__(self, template: Path) -> None:
        self.template = template

    def run(self, job_file: Path, run_dir: Path, submission_id: str) -> JobOutcome:
        job = JobConfig.from_yaml_file(job_file)
        source = {"preflight": "01_planning", "evaluate": "05_finalization"}.get(job.action)
        if source is None:
            source = "05_finalization" if run_dir.name == "05_finalization" else "02_baseline"
        shutil.copytree(self.template / source, run_dir, copy_function=_link_unless_written, dirs_exist_ok=True)
        output = run_dir / "job_output.log"
        return JobOutcome(exit_code=0, submission_id=submission_id, output_path=output, message="instant")


def install(template: str) -> None:
    """Every reconciler of this process launches instant jobs. Run in the
    operator's process and, as its ``WORKER_SETUP``, in each reconcile worker."""
    launcher = InstantLauncher(Path(template))
    reconcile.Reconciler._launcher = lambda self, pipeline: launcher  # type: ignore[method-assign]


def main() -> int:
    # Imported here, not at the top: a spawned reconcile worker imports this
    # file again (as ``__mp_main__``), and the worker of a real operator does
    # not import kopf, the handlers or the command line.
    from trainpipe_operator.cli import main as trainpipe_main
    from trainpipe_operator.controller import handlers
    from trainpipe_operator.controller import main as operator_main

    template = Path(sys.argv[1]).resolve()
    args = sys.argv[sys.argv.index("--") + 1:]
    if "--no-reconcile" in sys.argv[2:sys.argv.index("--")]:
        async def no_reconcile(body: object, patch: object) -> None:
            return None

        handlers._tick = no_reconcile  # type: ignore[assignment]
    install(str(template))
    operator_main.WORKER_SETUP = functools.partial(install, str(template))
    return trainpipe_main(args)


if __name__ == "__main__":
    sys.exit(main())
