"""``trainpipe``: the command line. The control plane never imports torch:
``trainpipe train`` runs the trainer as a child process, exactly as a Ray
job would run it."""

from __future__ import annotations

import argparse
import subprocess
import sys
from importlib import resources
from pathlib import Path

DEFAULT_JOB = "digits_job.yaml"


def default_job_path() -> Path:
    return Path(str(resources.files("trainpipe_operator.defaults") / DEFAULT_JOB))


def cmd_train(args: argparse.Namespace) -> int:
    config = args.config or default_job_path()
    command = [sys.executable, "-m", "trainpipe_trainer.run", "--config", str(config)]
    if args.run_dir:
        command += ["--run-dir", str(args.run_dir)]
    if args.fresh:
        command.append("--fresh")
    if args.no_ray:
        command.append("--no-ray")
    try:
        return subprocess.call(command)
    except KeyboardInterrupt:  # the child got the same SIGINT and checkpoints itself
        return 130


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="trainpipe", description="Gated training pipelines.")
    sub = parser.add_subparsers(dest="command", required=True)
    train = sub.add_parser("train", help="run one training job (default: the embedded digits job)")
    train.add_argument("--config", type=Path, help="job config YAML (default: the embedded digits job)")
    train.add_argument("--run-dir", type=Path, help="where artifacts go (default: the config's runDir)")
    train.add_argument("--fresh", action="store_true", help="discard checkpoints instead of resuming")
    train.add_argument("--no-ray", action="store_true", help="train without Ray")
    train.set_defaults(func=cmd_train)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
