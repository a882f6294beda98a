#!/usr/bin/env bash
# A development cluster of real components on loopback: etcd + kube-apiserver
# (no nodes), a Ray head with token auth, Prometheus and an MLflow tracking
# server, detached from this shell. State, kubeconfigs and logs in DEV_DIR (default .dev).
#
#   hack/dev-cluster.sh up       # then: source .dev/env
#   hack/dev-cluster.sh status
#   hack/dev-cluster.sh down
set -euo pipefail

cd "$(dirname "$0")/.."
cmd="${1:-}"
case "$cmd" in
  up|down|status) shift ;;
  *) echo "usage: $0 up|down|status [devcluster options, e.g. --scrape HOST:PORT]" >&2; exit 2 ;;
esac
DEV_DIR="${DEV_DIR:-.dev}"
VENV="${VENV:-.venv}"

args=()
if [[ "$cmd" == up ]]; then
  make --no-print-directory venv >&2
  assets="$(hack/envtest.sh)"  # prints the folder with kube-apiserver and etcd (builds it once)
  args+=(--assets "$assets")
  # The MLflow server's executable (its own venv outside the checkout; built once).
  args+=(--mlflow "$(hack/mlflow.sh)")
fi
exec "$VENV/bin/python" -m trainpipe_operator.devcluster "$cmd" --dir "$DEV_DIR" "${args[@]}" "$@"
