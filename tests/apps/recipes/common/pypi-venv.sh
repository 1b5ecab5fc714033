#!/bin/sh
# pypi-venv.sh VENV RELEASED REQUIREMENT...: a virtual environment VENV of Debian's python3
# holding REQUIREMENTs from PyPI, wheels only, resolved as PyPI stood at RELEASED (an ISO 8601
# time: when the upstream release a recipe reproduces was published), with pip 26.3 (it has
# --uploaded-prior-to). For a build stage of a recipe with registries=True: it trusts the host's
# CA bundle, copied to /etc/ssl/host-ca.crt (tests/apps/build.py).
set -eu
venv=$1
released=$2
shift 2
apt-get update
apt-get install -y --no-install-recommends ca-certificates python3 python3-venv
rm -rf /var/lib/apt/lists/*
python3 -m venv "$venv"
export PIP_CERT=/etc/ssl/host-ca.crt PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
"$venv/bin/pip" install 'pip==26.3'
"$venv/bin/pip" install --only-binary :all: --uploaded-prior-to "$released" "$@"
