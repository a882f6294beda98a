#!/usr/bin/env bash
# Provide kube-apiserver and etcd for the integration tests and the dev
# cluster, and print the folder that holds both (like controller-runtime's
# envtest assets).
#
# 1. KUBEBUILDER_ASSETS, when it names a folder holding both binaries, wins.
# 2. Otherwise the cache folder (outside the checkout, keyed by version).
# 3. Otherwise build it once from Debian's packages: etcd from etcd-server,
#    kube-apiserver from Debian's kubernetes source package with the vendored
#    reflect2 replaced by Debian's 1.0.2 (1.0.1 crashes under Go >= 1.18).
#    About 6-8 minutes on 2 cores. Needs root for apt-get.
set -euo pipefail

K8S_VERSION="${K8S_VERSION:-1.20.2}"
CACHE_ROOT="${TRAINPIPE_CACHE_HOME:-${XDG_CACHE_HOME:-$HOME/.cache}/trainpipe}"
ASSETS="$CACHE_ROOT/envtest/kube-apiserver-$K8S_VERSION"

has_both() { [[ -x "$1/kube-apiserver" && -x "$1/etcd" ]]; }

if [[ -n "${KUBEBUILDER_ASSETS:-}" ]] && has_both "$KUBEBUILDER_ASSETS"; then
  echo "$KUBEBUILDER_ASSETS"; exit 0
fi
if has_both "$ASSETS"; then
  echo "$ASSETS"; exit 0
fi

log() { echo "envtest: $*" >&2; }
apt_install() {
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$@" >/dev/null 2>&1 || {
    apt-get update -q >/dev/null 2>&1; DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$@" >/dev/null; }
}

log "building kube-apiserver $K8S_VERSION into $ASSETS (once; about 6-8 minutes)"
apt_install golang-go etcd-server rsync golang-github-modern-go-reflect2-dev dpkg-dev

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
# A deb-src list derived from this machine's own Debian sources, in a private
# apt state folder: the machine's apt configuration is left untouched.
mkdir -p "$work/apt/sources" "$work/apt/lists/partial"
for f in /etc/apt/sources.list.d/*.sources; do
  [[ -e "$f" ]] || continue
  sed 's/^Types: deb$/Types: deb-src/' "$f" > "$work/apt/sources/$(basename "$f")"
done
if [[ -f /etc/apt/sources.list ]]; then
  sed -n 's/^deb /deb-src /p' /etc/apt/sources.list > "$work/apt/sources/base.list"
fi
apt_opts=(-o "Dir::Etc::SourceList=/dev/null" -o "Dir::Etc::SourceParts=$work/apt/sources"
          -o "Dir::State::Lists=$work/apt/lists")
apt-get "${apt_opts[@]}" update -q >/dev/null
(cd "$work" && apt-get "${apt_opts[@]}" source --download-only -q "kubernetes=$K8S_VERSION*" >/dev/null 2>&1 \
  || apt-get "${apt_opts[@]}" source --download-only -q kubernetes >/dev/null)
tarball="$(ls "$work"/kubernetes_*.orig.tar.gz | head -n 1)"
mkdir -p "$work/src"
tar -xzf "$tarball" -C "$work/src" --strip-components=1

reflect2="$(dpkg -L golang-github-modern-go-reflect2-dev | grep -m1 '/github.com/modern-go/reflect2$')"
rm -rf "$work/src/vendor/github.com/modern-go/reflect2"
cp -r "$reflect2" "$work/src/vendor/github.com/modern-go/reflect2"
rm -f "$work/src/vendor/github.com/modern-go/reflect2/go.mod"

log "compiling (make WHAT=cmd/kube-apiserver)"
(cd "$work/src" && make WHAT=cmd/kube-apiserver >"$work/build.log" 2>&1) || { tail -n 40 "$work/build.log" >&2; exit 1; }

mkdir -p "$ASSETS.tmp"
cp "$work/src/_output/bin/kube-apiserver" "$ASSETS.tmp/"
cp "$(command -v etcd || echo /usr/bin/etcd)" "$ASSETS.tmp/"
rm -rf "$ASSETS" && mv "$ASSETS.tmp" "$ASSETS"
log "built and cached in ${SECONDS} s (later runs reuse $ASSETS)"
echo "$ASSETS"
