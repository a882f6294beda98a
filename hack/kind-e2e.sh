#!/usr/bin/env bash
# The kind suite: the real images, the Helm chart and a TrainingPipeline with
# `runtime.type: rayjob` on a one-node kind cluster, end to end.
#
#   make kind-e2e                  (or: hack/kind-e2e.sh)
#
# Exit codes: 0 passed, 1 failed, 3 skipped (a prerequisite is missing; the
# reason is on the line "kind-e2e: skipped: <reason>").
#
# Needs a Docker engine, kind, kubectl, helm (hack/helm.sh provides one) and
# KubeRay's operator chart: KUBERAY_CHART=/path/to/kuberay-operator (a folder
# or a .tgz). The cluster pulls KubeRay's and Ray's images itself.
#
# Environment:
#   KIND_CLUSTER   cluster name (default trainpipe-e2e); an existing one is reused
#   KEEP_CLUSTER   1: keep the cluster afterwards (default: delete it)
#   KIND_TIMEOUT   seconds to wait for the pipeline to succeed (default 3600)
#   KUBERAY_CHART  KubeRay's kuberay-operator chart (folder or .tgz)
#   PYTHON         a Python with PyYAML (default: .venv/bin/python, else python3)
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

CLUSTER="${KIND_CLUSTER:-trainpipe-e2e}"
CONTEXT="kind-$CLUSTER"
NAMESPACE="trainpipe-e2e"
RELEASE="trainpipe"
PIPELINE="digits"
TIMEOUT="${KIND_TIMEOUT:-3600}"
OPERATOR_IMAGE="trainpipe-operator:e2e"
TRAINER_IMAGE="trainpipe-trainer:e2e"
SKIPPED=3

log() { echo "kind-e2e: $*"; }
skip() { echo "kind-e2e: skipped: $*"; exit "$SKIPPED"; }
die() { echo "kind-e2e: FAILED: $*" >&2; exit 1; }

# ---------------------------------------------------------------- 1. preconditions
docker_info() {
  if command -v timeout >/dev/null 2>&1; then timeout 60 docker info; else docker info; fi
}
if ! command -v docker >/dev/null 2>&1 || ! docker_info >/dev/null 2>&1; then
  skip "no Docker engine (docker info failed)"
fi
command -v kind >/dev/null 2>&1 || skip "kind not installed"
command -v kubectl >/dev/null 2>&1 || skip "kubectl not installed"
HELM_BIN="$(hack/helm.sh)" || skip "helm not available (hack/helm.sh failed; set HELM=/path/to/helm)"
# Checked before anything is built: without KubeRay no RayJob would ever run.
[[ -n "${KUBERAY_CHART:-}" ]] || skip "KUBERAY_CHART not set: KubeRay's operator is needed for runtime.type: rayjob"
if [[ -n "${KUBERAY_CHART:-}" && ! -e "$KUBERAY_CHART" ]]; then
  die "KUBERAY_CHART=$KUBERAY_CHART does not exist"
fi
if [[ -n "${PYTHON:-}" ]]; then
  PY="$PYTHON"
elif [[ -x .venv/bin/python ]]; then
  PY=.venv/bin/python
else
  PY=python3
fi
"$PY" -c 'import yaml' 2>/dev/null || die "$PY cannot import yaml (run make venv, or set PYTHON)"

# Every call names the kind cluster's context: never whatever cluster is current.
kc() { kubectl --context "$CONTEXT" "$@"; }
helm() { "$HELM_BIN" --kube-context "$CONTEXT" "$@"; }

# ---------------------------------------------------------------- 2. the cluster
cleanup() {
  local rc=$?
  if [[ "${KEEP_CLUSTER:-0}" == "1" ]]; then
    log "keeping cluster $CLUSTER (KEEP_CLUSTER=1): kind delete cluster --name $CLUSTER"
  else
    log "deleting cluster $CLUSTER"
    kind delete cluster --name "$CLUSTER" >/dev/null 2>&1 || true
  fi
  exit "$rc"
}

trap cleanup EXIT
# Interrupted (Ctrl-C, or the pytest wrapper's timeout): still clean up.
trap 'exit 130' INT
trap 'exit 143' TERM
if kind get clusters 2>/dev/null | grep -qxF "$CLUSTER"; then
  log "reusing cluster $CLUSTER"
else
  log "creating cluster $CLUSTER"
  kind create cluster --name "$CLUSTER" --config kind-config.yaml --wait 120s
fi

# ---------------------------------------------------------------- 3. the images
log "building $OPERATOR_IMAGE and $TRAINER_IMAGE"
docker build --target operator -t "$OPERATOR_IMAGE" .
docker build --target trainer -t "$TRAINER_IMAGE" .
kind load docker-image --name "$CLUSTER" "$OPERATOR_IMAGE"
kind load docker-image --name "$CLUSTER" "$TRAINER_IMAGE"

# ---------------------------------------------------------------- 4. KubeRay
log "installing KubeRay's operator from $KUBERAY_CHART"
helm upgrade --install kuberay-operator "$KUBERAY_CHART" \
  --namespace kuberay-system --create-namespace --wait --timeout 5m

# ---------------------------------------------------------------- diagnostics
dump() {
  echo "----- kubectl logs deploy/$RELEASE -n $NAMESPACE --tail=500" >&2
  kc logs "deploy/$RELEASE" -n "$NAMESPACE" --tail=500 >&2 || true
  echo "----- kubectl describe tp $PIPELINE" >&2
  kc describe tp "$PIPELINE" -n "$NAMESPACE" >&2 || true
  echo "----- rayjobs" >&2
  kc get rayjobs -n "$NAMESPACE" -o wide >&2 || true
  kc describe rayjobs -n "$NAMESPACE" >&2 || true
  echo "----- pods" >&2
  kc get pods -A -o wide >&2 || true
  kc describe pods -n "$NAMESPACE" >&2 || true
  echo "----- events" >&2
  kc get events -n "$NAMESPACE" --sort-by=.lastTimestamp >&2 || true
}
fail() { dump; die "$*"; }

# ---------------------------------------------------------------- 5. trainpipe
log "installing the trainpipe chart"
helm upgrade --install "$RELEASE" charts/trainpipe \
  --namespace "$NAMESPACE" --create-namespace --wait --timeout 5m \
  -f charts/trainpipe/ci/kind-values.yaml \
  --set image.tag=e2e --set trainer.image.tag=e2e \
  || fail "helm install $RELEASE did not become ready"

# ---------------------------------------------------------------- 6. the pipeline
# A reused cluster may still hold the last run's pipeline: start from none.
kc delete tp "$PIPELINE" -n "$NAMESPACE" --ignore-not-found --wait --timeout 5m \
  || fail "could not delete the previous pipeline $PIPELINE"
# runtime.type is set in the manifest before it is applied: patching it after
# the apply would race with the operator, which acts on the first version.
log "applying examples/$PIPELINE.yaml with runtime.type: rayjob"
"$PY" - "examples/$PIPELINE.yaml" <<'EOF' | kc apply -n "$NAMESPACE" -f - || fail "could not apply the pipeline"
import sys

import yaml

with open(sys.argv[1], encoding="utf-8") as f:
    doc = yaml.safe_load(f)
doc.setdefault("spec", {}).setdefault("runtime", {})["type"] = "rayjob"
doc.get("metadata", {}).pop("namespace", None)
sys.stdout.write(yaml.safe_dump(doc, sort_keys=False))
EOF

# ---------------------------------------------------------------- 7. wait for Succeeded
log "waiting up to ${TIMEOUT}s for $PIPELINE to succeed"
deadline=$((SECONDS + TIMEOUT))
last=""
while :; do
  phase="$(kc get tp "$PIPELINE" -n "$NAMESPACE" -o jsonpath='{.status.phase}' 2>/dev/null || true)"
  if [[ "$phase" != "$last" ]]; then
    log "phase: ${phase:-<none>} (${SECONDS}s)"
    last="$phase"
  fi
  case "$phase" in
    Succeeded) break ;;
    Failed) fail "pipeline $PIPELINE failed" ;;
  esac
  if ((SECONDS >= deadline)); then
    fail "pipeline $PIPELINE did not succeed within ${TIMEOUT}s (phase: ${phase:-<none>})"
  fi
  sleep 10
done

# ---------------------------------------------------------------- 8. uninstall leaves nothing
# The pipeline goes first, while the operator runs: its finalizer stops and
# removes the pipeline's jobs.
kc delete tp "$PIPELINE" -n "$NAMESPACE" --wait --timeout 5m \
  || fail "deleting pipeline $PIPELINE did not finish (the operator's finalizer)"
helm uninstall "$RELEASE" -n "$NAMESPACE" --wait --timeout 5m \
  || fail "helm uninstall $RELEASE failed"
# Garbage collection is asynchronous: give terminating objects a minute.
left=""
for _ in $(seq 1 12); do
  left="$(kc get all,configmap,secret,serviceaccount,role,rolebinding,clusterrole,clusterrolebinding \
    -A -l "app.kubernetes.io/instance=$RELEASE" -o name)"
  [[ -z "$left" ]] && break
  sleep 5
done
if [[ -n "$left" ]]; then
  die "helm uninstall left resources labelled app.kubernetes.io/instance=$RELEASE:"$'\n'"$left"
fi

# ---------------------------------------------------------------- 9. done
log "passed"
