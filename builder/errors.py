"""The one error hierarchy of labbuild.

Library code raises these; ``builder.cli`` renders them in one place
(text or ``--json``) and maps them to exit code 1. Nothing below the CLI
prints or exits.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Problem:
    """One thing wrong with an input: where it is and what to do."""

    file: str
    path: str
    message: str
    line: int | None = None
    hint: str | None = None

    def render(self) -> str:
        where = self.file + (f":{self.line}" if self.line else "")
        text = f"{where}: {self.path}: {self.message}" if self.path else f"{where}: {self.message}"
        return f"{text} ({self.hint})" if self.hint else text

    def to_json(self) -> dict:
        return {"file": self.file, "line": self.line, "path": self.path,
                "message": self.message, "hint": self.hint}


class LabbuildError(Exception):
    """Root of every error a user can cause or fix. Rendered by the CLI."""

    def __init__(self, message: str, *, hint: str | None = None,
                 problems: list[Problem] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint
        self.problems: list[Problem] = list(problems or [])

    def render(self) -> str:
        lines = [p.render() for p in self.problems]
        lines.append(f"error: {self.message}")
        if self.hint:
            lines.append(f"hint: {self.hint}")
        return "\n".join(lines)

    def to_json(self) -> dict:
        return {"ok": False, "error": self.message, "hint": self.hint,
                "errors": [p.to_json() for p in self.problems]}


class ArgumentError(LabbuildError):
    """A command's arguments name something that does not exist (an unknown SERVICE): a usage
    error the library finds, rendered like any other but with exit 2."""


class BlueprintError(LabbuildError):
    """Blueprints or lab.toml are invalid (carries every problem found)."""


class LockError(LabbuildError):
    """The lock cannot be made, or is stale or missing.

    ``services`` maps each service that could not be resolved to why (empty
    when the error is not about resolving services).
    """

    def __init__(self, message: str, *, hint: str | None = None,
                 problems: list[Problem] | None = None,
                 services: dict[str, str] | None = None) -> None:
        super().__init__(message, hint=hint, problems=problems)
        self.services: dict[str, str] = dict(services or {})


class RegistryError(LabbuildError):
    """A registry refused, failed, timed out or sent bytes that do not hash right.

    ``registry`` (host[:port]), ``image`` and ``digest`` name what was asked
    for, ``status`` the HTTP status; each is None when unknown.
    """

    def __init__(self, message: str, *, hint: str | None = None,
                 problems: list[Problem] | None = None, registry: str | None = None,
                 image: str | None = None, digest: str | None = None,
                 status: int | None = None) -> None:
        super().__init__(message, hint=hint, problems=problems)
        self.registry = registry
        self.image = image
        self.digest = digest
        self.status = status


class BundleError(LabbuildError):
    """A bundle cannot be built, or fails verification."""


class InstallError(LabbuildError):
    """An install, upgrade, rollback or uninstall failed."""


class ExportError(LabbuildError):
    """A chart cannot be exported (bad output directory, bad input)."""


class ScaffoldError(LabbuildError):
    """A new service cannot be scaffolded."""


class BackupError(LabbuildError):
    """A backup cannot be made, verified or restored.

    ``service`` and ``volume`` name what was being captured or restored,
    ``member`` the backup file's member that failed (each None when unknown).
    """

    def __init__(self, message: str, *, hint: str | None = None, problems: list[Problem] | None = None,
                 service: str | None = None, volume: str | None = None, member: str | None = None) -> None:
        super().__init__(message, hint=hint, problems=problems)
        self.service = service
        self.volume = volume
        self.member = member
