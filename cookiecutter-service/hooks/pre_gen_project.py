"""Reject bad answers before cookiecutter renders anything.

Cookiecutter renders this file with Jinja and runs it before writing the
service's files; exit 1 makes it remove the (still empty) output directory.
The checks live in ``answer_problems`` — a pure function on the answers —
so ``labbuild new-service`` imports this very file (it is valid Python
before rendering too) and asks the same questions before it prompts or
renders: one set of rules, two entry points.
"""

from __future__ import annotations

import json
import re
import sys

NAME_RE = re.compile(r"^(?=.{2,41}$)[a-z][a-z0-9]*(-[a-z0-9]+)*$")   # builder/names.py: service
CONTROL_RE = re.compile(r"[\x00-\x1f\x7f]")
DIGEST_RE = re.compile(r"^sha256:[0-9a-f]{64}$")
TAG_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")
# registry host (with a dot, a port, or localhost) / path components
IMAGE_RE = re.compile(
    r"^(localhost|[a-z0-9-]+(\.[a-z0-9-]+)+|[a-z0-9.-]+:[0-9]+|\[[0-9a-fA-F:]+\](:[0-9]+)?)"
    r"(:[0-9]+)?/[a-z0-9]+([._-][a-z0-9]+)*(/[a-z0-9]+([._-][a-z0-9]+)*)*$")
CATEGORIES = ("app", "base", "observability", "data", "gateway", "devtools", "security", "access")
PHASES = ("0", "1", "2", "3", "4")


def _port_problem(key: str, value: str, *, optional: bool) -> str | None:
    if value == "" and optional:
        return None
    if not value.isdigit() or not 1 <= int(value) <= 65535:
        return f"{key}: {value!r} is not a port number (1-65535)" + (
            "; leave it empty to publish no host port" if optional else "")
    return None


def answer_problems(answers: dict) -> list[str]:
    """Every problem with the template answers, as ``key: message`` lines (empty: all good)."""
    out: list[str] = [f"{k}: {v!r} holds a newline or another control character (answers are one line)"
                      for k, v in answers.items() if not k.startswith("_") and CONTROL_RE.search(str(v))]
    a = {k: str(v).strip() for k, v in answers.items() if not k.startswith("_")}
    name = a.get("service_name", "")
    if not NAME_RE.fullmatch(name):
        out.append(f"service_name: {name!r} must match " + NAME_RE.pattern + " "
                   "(lower-case letters, digits, single hyphens; starts with a letter, ends with a letter "
                   "or digit; 2 to 41 characters; e.g. node-red)")
    if not a.get("description"):
        out.append("description: must not be empty (one line: what the service does)")
    if a.get("category", "app") not in CATEGORIES:
        out.append(f"category: {a.get('category')!r} is unknown; pick one of {', '.join(CATEGORIES)}")
    if a.get("phase", "1") not in PHASES:
        out.append(f"phase: {a.get('phase')!r} is unknown; pick one of {', '.join(PHASES)} (0 = base stack)")
    docs = a.get("docs", "")
    if docs and not re.fullmatch(r"https?://[^\s<>`]+", docs):
        out.append(f"docs: {docs!r} must be an http(s):// URL, or empty")
    image = a.get("image_name", "")
    if not IMAGE_RE.fullmatch(image):
        out.append(f"image_name: {image!r} is not a fully qualified repository "
                   "(registry host first, e.g. docker.io/nodered/node-red or ghcr.io/org/app)")
    tag = a.get("image_tag", "")
    if tag == "latest":
        out.append("image_tag: 'latest' is not allowed: pin a real version tag such as 4.0.5")
    elif not TAG_RE.fullmatch(tag):
        out.append(f"image_tag: {tag!r} is not a valid tag (letters, digits, '_', '.', '-'; at most 128)")
    digest = a.get("image_digest", "")
    if not DIGEST_RE.fullmatch(digest):
        out.append(f"image_digest: {digest!r} is not a digest: expected 'sha256:' and 64 lower-case "
                   "hex digits (keep the zero placeholder and run `labbuild lock --update NAME`)")
    for key, optional in (("container_port", False), ("host_port", True)):
        problem = _port_problem(key, a.get(key, ""), optional=optional)
        if problem:
            out.append(problem)
    for key in ("health_path", "metrics_path", "volume_target"):
        value = a.get(key, "")
        if value and (not value.startswith("/") or any(c.isspace() or c in "\"'\\" for c in value)):
            out.append(f"{key}: {value!r} must be an absolute path starting with '/' "
                       "(no spaces or quotes), or empty for none")
    if a.get("host_port", "") == "":
        for key in ("health_path", "metrics_path"):
            if a.get(key):
                out.append(f"{key}: needs a host port to be probed from; set host_port or leave {key} empty")
    return out


if __name__ == "__main__":
    # Rendered by cookiecutter: the answers as JSON (a raw string, so valid Python unrendered too).
    ANSWERS = json.loads(r'''{{ cookiecutter | jsonify }}''')
    problems = answer_problems(ANSWERS)
    if problems:
        print("cookiecutter-service: the answers were rejected, nothing was written:", file=sys.stderr)
        for line in problems:
            print(f"  - {line}", file=sys.stderr)
        sys.exit(1)
