"""The two ways renderers produce text besides f-strings: package-data
templates (``builder/templates/``) and deterministic YAML."""

from __future__ import annotations

from importlib import resources
from typing import Any

import yaml


def template_text(name: str) -> str:
    """A file from builder/templates/ (package data)."""
    return resources.files("builder").joinpath("templates", *name.split("/")).read_text("utf-8")


def dump_yaml(data: Any) -> str:
    """YAML in the order given (no key sorting), never wrapped: the same data, the same bytes.

    Non-ASCII is written as escapes: with ``allow_unicode`` PyYAML emits U+0085 (NEL)
    unquoted and reads it back as a line break (tests/test_escape.py found it).
    """
    return yaml.safe_dump(data, sort_keys=False, default_flow_style=False, allow_unicode=False,
                          width=4096)

