"""`labbuild validate` of a lab of 1,000 generated blueprints. Target: <= 1 s."""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

from _common import labbuild_exe, median, report, time_command

BLUEPRINT = """#:schema ../../builder/schemas/blueprint.schema.json
[service]
name = "svc-{i}"
description = "generated service {i}"
phase = {phase}
category = "app"
depends_on = {deps}
docs = "https://example.org/{i}"

[image]
name = "docker.io/example/svc-{i}"
tag = "1.{i}.0"
digest = "sha256:{digest}"

[[ports]]
name = "http"
container = 8080
host = {port}

[env]
LOG_LEVEL = "info"

[secrets.API_KEY]
generate = "token"

[[volumes]]
name = "data"
target = "/data"

[health]
port = "http"
path = "/healthz"

[metrics]
port = "http"

[[runbook]]
title = "Service {i} restarts"
symptom = "container restarting"
fix = "read the logs"
"""


def make_lab(root: Path, count: int) -> None:
    services = root / "blueprints" / "services"
    services.mkdir(parents=True)
    for i in range(count):
        deps = f'["svc-{i - 1}"]' if i % 10 else "[]"
        (services / f"svc-{i}.toml").write_text(BLUEPRINT.format(
            i=i, phase=min(4, i // 250 + (0 if i % 10 else 0)), deps=deps,
            digest=f"{i:064x}", port=10000 + i))
    names = ", ".join(f'"svc-{i}"' for i in range(count))
    (root / "blueprints" / "lab.toml").write_text(
        f'[lab]\nname = "bench"\ndefault_profile = "all"\n[profiles.all]\nservices = [{names}]\n')


def main() -> int:
    with tempfile.TemporaryDirectory() as tmp:
        make_lab(Path(tmp), 1000)
        exe = labbuild_exe()
        times = time_command([exe, "--root", tmp, "validate"], runs=5)
        return 0 if report("labbuild validate, 1,000 blueprints (median of 5)", median(times), 1.0) else 1


if __name__ == "__main__":
    sys.exit(main())
