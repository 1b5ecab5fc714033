"""Blueprints and the lab: load TOML, check it against the JSON Schema and
the semantic rules of DESIGN.md, and build typed models.

``load_lab(root)`` returns a validated ``Lab`` or raises one
``BlueprintError`` listing every problem; ``validate_paths`` returns the
problems. The modules, in the order data flows through them:

- ``source``: read TOML files, map key paths to lines, collect problems
- ``schema``: the JSON Schema and the problems it finds
- ``model``: the typed Blueprint/Lab dataclasses and the env naming rules
- ``rules``: the semantic rules across one blueprint and across services
- ``labfile``: lab.toml (name, platforms, profiles)
- ``access``: the front door: lab.toml ``[access]`` and the blueprints' ``[front_door]``
- ``load``: the public entry points tying them together
"""

from __future__ import annotations

from .load import lab_paths, load_lab, validate_paths
from .model import (
                    DEFAULT_PLATFORMS,
                    SECRET_REF_RE,
                    Access,
                    Bind,
                    Blueprint,
                    ConfigFile,
                    FrontDoor,
                    FrontDoorOidc, FrontDoorProjects,
                    Health,
                    Healthcheck,
                    Image,
                    Lab,
                    Metrics,
                    Model,
                    Port,
                    Profile,
                    Provision,
                    Resources,
                    RunbookEntry,
                    Secret,
                    Volume,
                    When,
                    env_id,
                    secret_env_key,
                    setting_env_key,
)
from .rules import SECRET_KEY_RE
from .schema import blueprint_schema
from .source import UPDATE_POLICY_KEYS, locate_lines, without_update_policy

__all__ = [
    "Access", "DEFAULT_PLATFORMS", "FrontDoor", "FrontDoorOidc", "FrontDoorProjects", "SECRET_KEY_RE", "SECRET_REF_RE", "UPDATE_POLICY_KEYS", "Bind", "Blueprint", "ConfigFile",
    "Health", "Healthcheck", "Image", "Lab", "Metrics", "Model", "Port", "Profile", "Provision", "Resources",
    "RunbookEntry", "Secret", "Volume", "When", "blueprint_schema", "env_id", "lab_paths",
    "load_lab", "locate_lines", "secret_env_key", "setting_env_key", "validate_paths", "without_update_policy",
]
