"""Which applications have a recipe, which catalog services each one serves, and why the
others have none.

A recipe is a directory ``recipes/<name>/`` holding a Dockerfile (``ARG BASE`` /
``FROM ${BASE}``: the base image of ``base.py``) and the files it copies; a recipe
with ``common=True`` also gets ``recipes/common/`` as ``common/`` in its build
context (scripts shared by recipes: busybox-based root filesystems, PyPI virtual
environments). Its hash covers the base's hash and every file of its build context
(path, mode, bytes), so editing a recipe rebuilds it and nothing else does. A recipe with ``registries=True`` fetches
from npm or PyPI over HTTPS during its build; its context also gets the host's CA
bundle as ``host/ca-certificates.crt`` (``build.py``), for its build stage to trust
what the host's own npm and pip trust. That file is the machine's, like its network:
it is outside the hash and must stay out of the final image.

A recipe may also take files of this machine that no registry reachable here serves
(``host_files``: the CPU build of torch in /opt/wheels for open-webui). They are in its
build context under the name given and inside its hash (their bytes, like the recipe's
own); when one is absent the recipe is not built and ``images`` names it under "unbuilt"
with the path (``Recipe.missing``).

An application is named by the last part of the image repository the catalog pins
(``docker.io/library/postgres`` -> ``postgres``); a recipe serves every shipped
blueprint whose ``[image] name`` is its ``upstream`` repository.

One recipe is no application: ``ollama-standin`` is a protocol stand-in for Ollama (canned
answers to /api/tags, /api/chat, /api/embed; the one stand-in issue 22 allows). Its
``stand_in`` says so; ``images`` publishes it for the "ollama" service and names it under
"stand_ins", and Ollama itself stays under "unbuilt".
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

RECIPES_DIR = Path(__file__).resolve().parent / "recipes"
COMMON_DIR = RECIPES_DIR / "common"


@dataclass(frozen=True)
class Recipe:
    name: str          # the application, and its directory under recipes/
    upstream: str      # the official image repository the shipped blueprints pin
    dockerfile: str    # the official image's Dockerfile, whose contract the recipe keeps
    common: bool = False   # its build uses the scripts of recipes/common/
    registries: bool = False   # its build stage downloads from npm or PyPI (gets host/ca-certificates.crt)
    stand_in: str = ""     # set for a protocol stand-in (not the application): what it is
    host_files: tuple[tuple[str, str], ...] = ()   # (name in the build context, file on this machine)

    @property
    def directory(self) -> Path:
        return RECIPES_DIR / self.name

    def context_files(self) -> list[tuple[str, Path]]:
        """``(name in the build context, file)``: the recipe's files, then common/'s."""
        out = []
        for top, prefix in ((self.directory, ""), *([(COMMON_DIR, "common/")] if self.common else [])):
            out += [(prefix + p.relative_to(top).as_posix(), p) for p in sorted(top.rglob("*")) if p.is_file()]
        return out + [(name, Path(path)) for name, path in self.host_files]

    def missing(self) -> str:
        """Why this recipe cannot be built on this machine ("" when it can): a host file absent."""
        absent = [path for _, path in self.host_files if not Path(path).is_file()]
        return (f"{', '.join(absent)} not on this machine: the build takes it from this disk, "
                "no registry reachable here serves it") if absent else ""

    def hash(self, base_hash: str) -> str:
        h = hashlib.sha256(f"base {base_hash}\n".encode())
        for name, path in self.context_files():
            h.update(f"{name} {file_mode(path):o} {path.stat().st_size}\n".encode())
            h.update(path.read_bytes())
        return h.hexdigest()


def file_mode(path: Path) -> int:
    """0755 or 0644, as git keeps it (a checkout's umask does not change a recipe)."""
    return 0o755 if path.stat().st_mode & 0o100 else 0o644


RECIPES: tuple[Recipe, ...] = (
    Recipe("postgres", "docker.io/library/postgres",
           "https://github.com/docker-library/postgres/blob/master/17/trixie/Dockerfile"),
    Recipe("redis", "docker.io/library/redis",
           "https://github.com/redis/docker-library-redis/blob/master/alpine/Dockerfile", common=True),
    Recipe("prometheus", "quay.io/prometheus/prometheus",
           "https://github.com/prometheus/prometheus/blob/main/Dockerfile", common=True),
    Recipe("node-exporter", "quay.io/prometheus/node-exporter",
           "https://github.com/prometheus/node_exporter/blob/master/Dockerfile", common=True),
    Recipe("nginx", "docker.io/library/nginx",
           "https://github.com/nginxinc/docker-nginx/blob/master/stable/alpine-slim/Dockerfile", common=True),
    Recipe("node-red", "docker.io/nodered/node-red",
           "https://github.com/node-red/node-red-docker/blob/master/.docker/Dockerfile.alpine", registries=True),
    Recipe("litellm", "ghcr.io/berriai/litellm", "https://github.com/BerriAI/litellm/blob/main/Dockerfile",
           common=True, registries=True),
    Recipe("base-notebook", "quay.io/jupyter/base-notebook",
           "https://github.com/jupyter/docker-stacks/blob/main/images/base-notebook/Dockerfile",
           common=True, registries=True),
    Recipe("n8n", "docker.io/n8nio/n8n", "https://github.com/n8n-io/n8n/blob/master/docker/images/n8n/Dockerfile",
           registries=True),
    Recipe("open-webui", "ghcr.io/open-webui/open-webui",
           "https://github.com/open-webui/open-webui/blob/main/Dockerfile", common=True, registries=True,
           host_files=(("wheels/torch-2.13.0+cpu-cp311-cp311-manylinux_2_28_x86_64.whl",
                        "/opt/wheels/torch-2.13.0+cpu-cp311-cp311-manylinux_2_28_x86_64.whl"),)),
    Recipe("ollama-standin", "docker.io/ollama/ollama", "https://github.com/ollama/ollama/blob/main/Dockerfile",
           stand_in="a protocol stand-in, not Ollama: canned answers to /, /api/version, /api/tags, /api/chat, /api/embed "
                    "and /api/show (tests/apps/recipes/ollama-standin)"),
)

_ELSEWHERE = "no Debian, PyPI or npm package of it can be fetched here (DESIGN.md, Test environment)"
_TODO = "{} has it; no recipe written yet"

# Why an application of the catalog has no recipe (keyed by application name).
NO_RECIPE: dict[str, str] = {
    **{app: _ELSEWHERE for app in (
        "authelia", "clickhouse-server", "cloudflared", "dify-api", "dify-plugin-daemon", "dify-sandbox", "dify-web",
        "grafana", "langfuse", "langfuse-worker", "ollama", "openbao", "qdrant", "rustfs", "traefik",
        "weaviate")},
    "cadvisor": "not in Debian bookworm, PyPI or npm; no recipe",
    "squid": _TODO.format("Debian (squid)"),
    "flowise": _TODO.format("npm (flowise)"),
    "code-server": _TODO.format("npm (code-server)"),
}


def application(repository: str) -> str:
    """``docker.io/library/postgres`` -> ``postgres``."""
    return repository.rsplit("/", 1)[-1]


def recipe_for(repository: str) -> Recipe | None:
    return next((r for r in RECIPES if r.upstream == repository), None)
