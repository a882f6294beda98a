#!/usr/bin/env bash
# Provide an `mlflow` server executable for the integration tests and the dev
# cluster, and print its path.
#
# 1. MLFLOW_SERVER, when it names an executable, wins.
# 2. Otherwise the cache (outside the checkout, keyed by version): a venv of
#    its own holding the full mlflow package.
# 3. Otherwise build that venv once (pip install mlflow==<version>).
#
# Why a venv of its own: the full mlflow package pins python-dateutil<3
# (through graphene), which conflicts with the kubernetes client in the
# project's venv, and it shares its module folder with mlflow-skinny (the
# project's client for reading back): installing it there breaks both.
set -euo pipefail

MLFLOW_VERSION="${MLFLOW_VERSION:-3.17.2}"
CACHE_ROOT="${TRAINPIPE_CACHE_HOME:-${XDG_CACHE_HOME:-$HOME/.cache}/trainpipe}"
VENV_DIR="$CACHE_ROOT/mlflow/$MLFLOW_VERSION/venv"
TARGET="$VENV_DIR/bin/mlflow"
# Written last: a venv without it is a half-built one (rebuilt).
DONE="$VENV_DIR/.installed"

if [[ -n "${MLFLOW_SERVER:-}" && -x "${MLFLOW_SERVER}" ]]; then
  echo "$MLFLOW_SERVER"; exit 0
fi
if [[ -x "$TARGET" && -f "$DONE" ]]; then
  echo "$TARGET"; exit 0
fi

PYTHON="${PYTHON:-python3}"
mkdir -p "$(dirname "$VENV_DIR")"
# One builder at a time (parallel test workers, `make -j`): the others wait
# for it and then find the finished venv.
exec 9>"$VENV_DIR.lock"
flock 9
if [[ -x "$TARGET" && -f "$DONE" ]]; then
  echo "$TARGET"; exit 0
fi
echo "mlflow: installing mlflow==$MLFLOW_VERSION into $VENV_DIR (once)" >&2
# A venv without the marker is a half-built one: start over.
rm -rf "$VENV_DIR"
"$PYTHON" -m venv "$VENV_DIR"
"$VENV_DIR/bin/pip" install -q --disable-pip-version-check "mlflow==$MLFLOW_VERSION" >&2
got="$("$VENV_DIR/bin/python" -c 'import mlflow; print(mlflow.__version__)')"
if [[ "$got" != "$MLFLOW_VERSION" ]]; then
  echo "mlflow: $VENV_DIR holds mlflow $got, expected $MLFLOW_VERSION" >&2
  exit 1
fi
touch "$DONE"
echo "mlflow: installed in ${SECONDS} s (later runs reuse $TARGET)" >&2
echo "$TARGET"
