"""``python -m trainpipe_trainer.run --config job.yaml``: what a Ray job (or
``trainpipe train``) runs. Validates the job config, optionally discards old
checkpoints (``--fresh``), launches the workers (Ray Train, or in-process /
torch DDP without Ray) and exits with a code the control plane understands:

    0   completed (or stopped early by patience)
    1   failed (the reason is in evidence.json)
    2   the job config is invalid (one line per problem on stderr)
    75  interrupted at a step boundary, checkpoint written: run again to resume

``action: preflight`` and ``action: evaluate`` exit 0 when their report is ok
(preflight.json ``ok``; test evaluated and every export checked and matching
PyTorch), 1 otherwise, 2 for an invalid config.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from pydantic import ValidationError

from trainpipe_trainer.contract.evidence import Evidence
from trainpipe_trainer.contract.job_config import JobConfig
from trainpipe_trainer.contract.results import PreflightReport
from trainpipe_trainer.contract.validation_errors import format_validation_error
from trainpipe_trainer.engine import exit_codes

STATUS_EXIT = {
    "completed": exit_codes.OK,
    "early_stopped": exit_codes.OK,
    "interrupted": exit_codes.INTERRUPTED_RESUMABLE,
    "failed": exit_codes.FAILED,
}


def load_config(path: Path, overrides: argparse.Namespace) -> JobConfig:
    import yaml

    with open(path, encoding="utf-8") as handle:
        raw = yaml.safe_load(handle) or {}
    if not isinstance(raw, dict):
        raise ValueError(f"{path}: a job config is a YAML mapping, got {type(raw).__name__}")
    if overrides.run_dir:
        raw["runDir"] = str(overrides.run_dir)
    if overrides.fresh:
        raw["fresh"] = True
    if overrides.no_ray:
        raw.setdefault("ray", {})["enabled"] = False
    return JobConfig.model_validate(raw)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m trainpipe_trainer.run", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", required=True, type=Path, help="job config YAML")
    parser.add_argument("--run-dir", type=Path, help="override runDir")
    parser.add_argument("--fresh", action="store_true", help="discard checkpoints instead of resuming")
    parser.add_argument("--no-ray", action="store_true", help="train without Ray (in-process / torch DDP)")
    args = parser.parse_args(argv)
    try:
        config = load_config(args.config, args)
    except ValidationError as exc:
        for line in format_validation_error(exc, source=str(args.config)):
            print(line, file=sys.stderr)
        return exit_codes.CONFIG_ERROR
    except (OSError, ValueError) as exc:
        print(f"{args.config}: {exc}", file=sys.stderr)
        return exit_codes.CONFIG_ERROR

    from trainpipe_trainer.launch import launch

    result = launch(config)
    if not isinstance(result, Evidence):  # preflight / evaluate: 0 when the report is ok
        if isinstance(result, PreflightReport):
            detail = result.error or f"see {Path(config.run_dir) / 'preflight.json'}"
        else:
            detail = result.reason
        outcome = "passed" if result.ok else "FAILED"
        print(f"trainpipe: {config.action} {config.name} {outcome}: {detail}", file=sys.stderr)
        return exit_codes.OK if result.ok else exit_codes.FAILED
    evidence: Evidence = result
    print(f"trainpipe: job {config.name} {evidence.status}: {evidence.reason}", file=sys.stderr)
    return STATUS_EXIT[evidence.status]


if __name__ == "__main__":
    sys.exit(main())
