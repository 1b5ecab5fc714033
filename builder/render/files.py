"""Every rendered text file of a bundle, by arcname."""

from __future__ import annotations

import json

from ..format.files import (
    ACCESS_JSON,
    COMPOSE_FILE,
    COMPOSE_GPU_FILE,
    HOME_PAGE,
    LAB_ENV,
    SECRETS_EXAMPLE,
)
from .compose import render_compose, render_compose_gpu
from .door import render_access_json
from .envfile import render_lab_env, render_secrets_example
from .homepage import render_home
from .observability import render_observability
from .release import ReleaseInput
from .runbooks import render_runbooks


def render_config_files(ri: ReleaseInput) -> dict[str, str]:
    """``config/<svc>/<name>`` for every ``[[files]]`` entry."""
    return {f"config/{n}/{f.name}": f.content for n in ri.services
            for f in ri.blueprint(n).effective_files(ri.services)}


def render_text_files(ri: ReleaseInput) -> dict[str, str]:
    """Every rendered text file of a bundle, by arcname (no lock, manifest, sums, install.sh)."""
    files = {
        COMPOSE_FILE: render_compose(ri),
        LAB_ENV: render_lab_env(ri),
        SECRETS_EXAMPLE: render_secrets_example(ri),
    }
    gpu = render_compose_gpu(ri)
    if gpu is not None:
        files[COMPOSE_GPU_FILE] = gpu
    files.update(render_config_files(ri))
    files.update(render_runbooks(ri))
    files.update(render_observability(ri))
    if ri.door is not None:
        access = render_access_json(ri.door, ri.lab)
        files[ACCESS_JSON] = access
        files[HOME_PAGE] = render_home(json.loads(access)).decode("utf-8")
    return dict(sorted(files.items()))
