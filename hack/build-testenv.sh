#!/usr/bin/env bash
# Build the real test control plane (kube-apiserver and etcd) from their Go modules.
#
# Binaries are cached by version under $CLIMATIK_TESTENV_CACHE (default ~/.cache/climatik/testenv) and the
# build is skipped when they are already there, so only the first run on a machine pays for it.
# Prints the directory holding the binaries on its last line.
set -euo pipefail

KUBE_VERSION="${KUBE_VERSION:-v1.34.4}"
ETCD_VERSION="${ETCD_VERSION:-v3.6.16}"
CACHE="${CLIMATIK_TESTENV_CACHE:-$HOME/.cache/climatik/testenv}"
OUT="$CACHE/kube-$KUBE_VERSION-etcd-$ETCD_VERSION"

log() { echo "build-testenv: $*" >&2; }

build_apiserver() {
  local work="$CACHE/src/apiserver-$KUBE_VERSION"
  rm -rf "$work" && mkdir -p "$work" && cd "$work"
  go mod init climatik.local/testenv/apiserver >/dev/null 2>&1
  local gomod
  gomod=$(go mod download -json "k8s.io/kubernetes@$KUBE_VERSION" | python3 -c 'import json,sys; print(json.load(sys.stdin)["GoMod"])')
  # Upstream pins its staging modules at v0.0.0 and replaces them with local paths, which are ignored when it is
  # a dependency: pin each one to the matching published v0.<minor>.<patch> tag instead.
  local staging="v0.${KUBE_VERSION#v1.}"
  python3 - "$gomod" "$staging" >>go.mod <<'PY'
import re, sys
text = open(sys.argv[1]).read()
mods = sorted(set(re.findall(r"^\s*(k8s\.io/[\w./-]+) v0\.0\.0$", text, re.M)))
for line in text.splitlines():
    if line.startswith("godebug"):
        print(line)
print("replace (")
for m in mods:
    print(f"\t{m} => {m} {sys.argv[2]}")
print(")")
PY
  # Getting the command package (not just the module) records go.sum entries for everything it imports.
  go get "k8s.io/kubernetes/cmd/kube-apiserver@$KUBE_VERSION" >&2
  local pkg=k8s.io/component-base/version
  local minor="${KUBE_VERSION#v1.}"; minor="${minor%%.*}"
  go build -trimpath -o "$OUT/kube-apiserver" \
    -ldflags "-s -w -X $pkg.gitVersion=$KUBE_VERSION -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor -X $pkg.gitTreeState=clean" \
    k8s.io/kubernetes/cmd/kube-apiserver
}

build_kubectl() {
  # Same module graph as the apiserver, so this costs little once that is built; gives a kubectl of the same minor.
  cd "$CACHE/src/apiserver-$KUBE_VERSION"
  local pkg=k8s.io/client-go/pkg/version
  local minor="${KUBE_VERSION#v1.}"; minor="${minor%%.*}"
  go get "k8s.io/kubernetes/cmd/kubectl@$KUBE_VERSION" >&2
  go build -trimpath -o "$OUT/kubectl" \
    -ldflags "-s -w -X $pkg.gitVersion=$KUBE_VERSION -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor -X k8s.io/component-base/version.gitVersion=$KUBE_VERSION -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=$minor" \
    k8s.io/kubernetes/cmd/kubectl
}

build_etcd() {
  local work="$CACHE/src/etcd-$ETCD_VERSION"
  rm -rf "$work" && mkdir -p "$work" && cd "$work"
  go mod init climatik.local/testenv/etcd >/dev/null 2>&1
  go get "go.etcd.io/etcd/server/v3@$ETCD_VERSION" >&2
  go build -trimpath -ldflags "-s -w" -o "$OUT/etcd" go.etcd.io/etcd/server/v3
}

mkdir -p "$OUT"
if [[ -x "$OUT/etcd" ]]; then log "etcd $ETCD_VERSION cached"; else log "building etcd $ETCD_VERSION"; build_etcd; fi
if [[ -x "$OUT/kube-apiserver" ]]; then log "kube-apiserver $KUBE_VERSION cached"
else log "building kube-apiserver $KUBE_VERSION (10-20 minutes on 2 cores the first time)"; build_apiserver; fi
if [[ -x "$OUT/kubectl" ]]; then log "kubectl $KUBE_VERSION cached"; else log "building kubectl $KUBE_VERSION"; build_kubectl; fi
echo "$OUT"
