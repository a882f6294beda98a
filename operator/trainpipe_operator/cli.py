"""``trainpipe``: the command line. The control plane never imports torch:
``trainpipe train`` runs the trainer as a child process, exactly as a Ray
job would run it."""

from __future__ import annotations

import argparse
import subprocess
import sys
from importlib import resources
from pathlib import Path

from trainpipe_operator.commands import run as commands
from trainpipe_operator.commands import suspend as suspend_commands

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


def cmd_crd(args: argparse.Namespace) -> int:
    from trainpipe_operator.crd import render_crd_yaml

    text = render_crd_yaml()
    if not args.write:
        sys.stdout.write(text)
        return 0
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(text, encoding="utf-8")
    print(f"wrote {args.output}")
    return 0


def cmd_operator(args: argparse.Namespace) -> int:
    from trainpipe_operator.controller.main import run_operator
    from trainpipe_operator.controller.settings import OperatorSettings

    settings = OperatorSettings()
    for name in ("artifact_root", "prometheus_url", "ray_address", "metrics_port", "liveness_port", "poll_seconds",
                 "reconcile_processes", "api_connections",
                 "trainer_metrics_port", "webhook_port", "webhook_addr", "webhook_host", "webhook_cert_dir",
                 "operator_user", "default_queue_name"):
        value = getattr(args, name)
        if value is not None:
            setattr(settings, name, value)
    if args.namespace:
        settings.namespaces = args.namespace
    if args.ray_allowed_address:
        settings.ray_allowed_addresses = args.ray_allowed_address
    if args.tracking_allowed_uri:
        settings.tracking_allowed_uris = args.tracking_allowed_uri
    return run_operator(settings, args.kubeconfig, json_logs=not args.plain_logs)


def _add_set_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--set", action="append", default=[], metavar="PATH=VALUE",
                        help="override a spec field, e.g. --set baseline.lr=0.01 --set data.augment=[hflip,crop] "
                             "(dotted names under spec, the value as YAML; repeatable, a later one wins)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="trainpipe", description="Gated training pipelines.")
    sub = parser.add_subparsers(dest="command", required=True)
    train = sub.add_parser("train", help="run one training job (default: the embedded digits job)")
    train.add_argument("--config", type=Path, help="job config YAML (default: the embedded digits job)")
    train.add_argument("--run-dir", type=Path, help="where artifacts go (default: the config's runDir)")
    train.add_argument("--fresh", action="store_true", help="discard checkpoints instead of resuming")
    train.add_argument("--no-ray", action="store_true", help="train without Ray")
    train.set_defaults(func=cmd_train)

    run = sub.add_parser("run", help="run a TrainingPipeline on this machine, every phase and gate")
    run.add_argument("pipeline", type=Path, help="the TrainingPipeline manifest (the file kubectl applies)")
    run.add_argument("--run-dir", type=Path, help="where the run goes (default: runs/<metadata.name>)")
    run.add_argument("--fresh", action="store_true", help="start over, discarding the run directory")
    run.add_argument("--quiet", action="store_true", help="no progress output")
    _add_set_option(run)
    run.set_defaults(func=lambda a: commands.run(a.pipeline, a.run_dir, a.fresh, a.quiet, a.set))

    validate = sub.add_parser("validate", help="check a manifest; one line per problem, exit 2 when invalid")
    validate.add_argument("pipeline", type=Path)
    _add_set_option(validate)
    validate.set_defaults(func=lambda a: commands.validate(a.pipeline, a.set))

    status = sub.add_parser("status", help=("phase, progress and ETA, gates with their checks, decisions and "
                                            "artifacts of a run directory, or of a TrainingPipeline in the cluster"))
    status.add_argument("run_dir", type=Path, metavar="RUN_DIR|NAME",
                        help="a run directory, or the name of a TrainingPipeline (with -n, or no such folder)")
    status.add_argument("-n", "--namespace", help="the TrainingPipeline's namespace (default: the kubeconfig's)")
    status.set_defaults(func=lambda a: commands.show_status(a.run_dir, a.namespace))

    approve = sub.add_parser("approve", help="approve a run waiting in AwaitingApproval")
    approve.add_argument("run_dir", type=Path)
    approve.add_argument("--by", help="who approves (default: the current user)")
    approve.set_defaults(func=lambda a: commands.approve(a.run_dir, a.by))

    for verb, value, text in (("suspend", True, "stop a pipeline's job at a checkpoint and hold it (spec.suspend)"),
                              ("resume", False, "resume a suspended pipeline from its checkpoint")):
        held = sub.add_parser(verb, help=text + " in the cluster")
        held.add_argument("name", help="the TrainingPipeline's name")
        held.add_argument("-n", "--namespace", help="its namespace (default: the kubeconfig context's, else default)")
        held.add_argument("--kubeconfig", type=Path, help="default: $KUBECONFIG, else ~/.kube/config")
        held.set_defaults(func=lambda a, value=value: suspend_commands.set_suspend(a.name, a.namespace, value,
                                                                                    a.kubeconfig))

    crd = sub.add_parser("crd", help="print the TrainingPipeline CRD generated from the spec models")
    crd.add_argument("--write", action="store_true", help="write it to --output instead of printing it")
    crd.add_argument("--output", type=Path, default=Path("crds/trainingpipelines.trainpipe.io.yaml"),
                     help="where --write writes (default: crds/trainingpipelines.trainpipe.io.yaml)")
    crd.set_defaults(func=cmd_crd)

    operator = sub.add_parser("operator", help="run the Kubernetes operator (kopf)")
    operator.add_argument("--kubeconfig", type=Path, help="default: in-cluster, else $KUBECONFIG")
    operator.add_argument("--artifact-root", type=Path, help="shared artifact store ($TRAINPIPE_ARTIFACT_ROOT)")
    operator.add_argument("--prometheus-url", help="Prometheus for the GPU check ($TRAINPIPE_PROMETHEUS_URL)")
    operator.add_argument("--ray-address", help="default Ray Job API address ($TRAINPIPE_RAY_ADDRESS)")
    operator.add_argument("--ray-allowed-address", action="append", default=None,
                          help="a Ray Job API address pipelines may name (repeatable; "
                               "$TRAINPIPE_RAY_ALLOWED_ADDRESSES, comma-separated)")
    operator.add_argument("--tracking-allowed-uri", action="append", default=None,
                          help="an MLflow tracking URI pipelines may name (repeatable; "
                               "$TRAINPIPE_TRACKING_ALLOWED_URIS, comma-separated)")
    operator.add_argument("--namespace", action="append", default=None, help="watch only these (repeatable)")
    operator.add_argument("--metrics-port", type=int, help="/metrics port, 0: off ($TRAINPIPE_METRICS_PORT, 9090)")
    operator.add_argument("--liveness-port", type=int,
                          help="/healthz and /readyz port, 0: off ($TRAINPIPE_LIVENESS_PORT, 8080)")
    operator.add_argument("--trainer-metrics-port", type=int,
                          help="training jobs serve trainpipe_* metrics here, 0: off ($TRAINPIPE_TRAINER_METRICS_PORT, 0)")
    operator.add_argument("--poll-seconds", type=float, help="reconcile interval ($TRAINPIPE_POLL_SECONDS, 2)")
    operator.add_argument("--reconcile-processes", type=int,
                          help="worker processes that run reconciles; 0: a thread of the operator's process "
                               "($TRAINPIPE_RECONCILE_PROCESSES, 1)")
    operator.add_argument("--api-connections", type=int,
                          help="at most this many API requests at once besides the watches; 0: no limit "
                               "($TRAINPIPE_API_CONNECTIONS, 64)")
    operator.add_argument("--webhook-port", type=int,
                          help="admission webhook HTTPS port, 0: off, and no approval possible ($TRAINPIPE_WEBHOOK_PORT, 0)")
    operator.add_argument("--webhook-addr", help="webhook listen address ($TRAINPIPE_WEBHOOK_ADDR, 127.0.0.1)")
    operator.add_argument("--webhook-host", help="name the API server calls the webhook by; SAN of a generated "
                          "certificate ($TRAINPIPE_WEBHOOK_HOST, 127.0.0.1)")
    operator.add_argument("--webhook-cert-dir", type=Path, help="tls.crt, tls.key, ca.crt for the webhook; default: "
                          "self-signed ($TRAINPIPE_WEBHOOK_CERT_DIR)")
    operator.add_argument("--operator-user", help="the user the operator authenticates as; only it may write "
                          "status ($TRAINPIPE_OPERATOR_USER)")
    operator.add_argument("--default-queue-name", help="Kueue LocalQueue for rayjob pipelines that name no "
                          "spec.runtime.queueName ($TRAINPIPE_DEFAULT_QUEUE_NAME); none: not queued")
    operator.add_argument("--plain-logs", action="store_true", help="human-readable logs instead of JSON")
    operator.set_defaults(func=cmd_operator)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
