"""The command line: a thin shell over the library.

Each command parses options, calls one library function, and renders its
result as text (stderr/stdout) or, with ``--json``, as exactly one JSON
object on stdout. Errors are rendered once, in ``main``: every
``LabbuildError`` becomes a message and exit 1; usage errors (click's, and
``ArgumentError``) exit 2.

Commands are registered lazily (``COMMANDS``) so ``labbuild --version``
imports nothing heavy: each command's module is imported only when run.
"""

from __future__ import annotations

import importlib
import json
import os
import sys
from pathlib import Path
from typing import Any

import click

from . import __version__
from .errors import ArgumentError, LabbuildError
from .fsutil import os_hint

# name -> "module:attribute" of a click.Command. Order is the help order.
COMMANDS: dict[str, str] = {
    "validate": "builder.commands.validate:validate",
    "schema": "builder.commands.validate:schema",
    "lock": "builder.commands.lock:lock",
    "outdated": "builder.commands.lock:outdated",
    "release": "builder.commands.release:release",
    "verify": "builder.commands.release:verify",
    "diff": "builder.commands.release:diff",
    "keygen": "builder.commands.release:keygen",
    "sbom": "builder.commands.release:sbom",
    "mirror": "builder.commands.mirror:mirror",
    "install": "builder.commands.install:install",
    "status": "builder.commands.install:status",
    "rollback": "builder.commands.install:rollback",
    "uninstall": "builder.commands.install:uninstall",
    "check": "builder.commands.install:check",
    "doctor": "builder.commands.install:doctor",
    "export": "builder.commands.export:export",
    "backup": "builder.commands.backup:backup",
    "restore": "builder.commands.backup:restore",
    "backups": "builder.commands.backup:backups",
    "secrets": "builder.commands.secrets:secrets",
    "audit": "builder.commands.secrets:audit",
    "users": "builder.commands.users:users",
    "new-service": "builder.commands.scaffold:new_service",
}


class LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(COMMANDS)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        target = COMMANDS.get(name)
        if target is None:
            return None
        module, attr = target.split(":")
        return getattr(importlib.import_module(module), attr)


class Output:
    """Where results go: text for humans or one JSON object for machines."""

    def __init__(self, root: Path, as_json: bool) -> None:
        self.root = root
        self.json = as_json

    def info(self, text: str) -> None:
        """Human progress/status text: stderr (so stdout stays clean JSON)."""
        click.echo(text, err=True)

    def result(self, data: dict[str, Any], text: str | None = None) -> None:
        """The command's result: JSON on stdout with --json, else ``text`` on stdout."""
        if self.json:
            click.echo(json.dumps(data, sort_keys=True, indent=2))
        elif text:
            click.echo(text)


pass_output = click.make_pass_decorator(Output)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--root", type=click.Path(file_okay=False, path_type=Path), default=Path("."),
              show_default=True, help="The lab repository (holds blueprints/ and lockfiles/).")
@click.option("--json", "as_json", is_flag=True,
              help="Print exactly one JSON object on stdout; human text goes to stderr.")
@click.version_option(__version__, prog_name="labbuild")
@click.pass_context
def cli(ctx: click.Context, root: Path, as_json: bool) -> None:
    """labbuild — reproducible builds of Local AI Lab.

    Blueprints pin every image by digest; `lock` records the content-addressed
    closure; `release` builds an immutable, bit-for-bit reproducible bundle;
    `install` brings a bundle up on any host, also with no network.
    """
    ctx.obj = Output(root=root, as_json=as_json)


def main(argv: list[str] | None = None) -> int:
    """Console entry point: run the CLI and render errors in one place."""
    as_json = "--json" in (argv if argv is not None else sys.argv[1:])
    try:
        rv = cli.main(args=argv, prog_name="labbuild", standalone_mode=False)
    except ArgumentError as exc:
        _render_error(exc, as_json)
        return 2
    except LabbuildError as exc:
        _render_error(exc, as_json)
        return 1
    except click.exceptions.Abort:
        if as_json:
            click.echo(json.dumps({"ok": False, "error": "aborted", "errors": [], "hint": None}, indent=2))
        click.echo("aborted", err=True)
        return 130
    except click.ClickException as exc:
        if as_json:  # the contract: exactly one JSON object on stdout, usage errors included
            click.echo(json.dumps({"ok": False, "error": exc.format_message(), "usage": True, "errors": [],
                                   "hint": "see --help"}, sort_keys=True, indent=2))
        exc.show()
        return exc.exit_code
    except click.exceptions.Exit as exc:
        return exc.exit_code
    except KeyboardInterrupt:
        if as_json:
            click.echo(json.dumps({"ok": False, "error": "interrupted", "errors": [], "hint": None}, indent=2))
        click.echo("interrupted", err=True)
        return 130
    except OSError as exc:
        err = LabbuildError(f"{exc.filename or ''}{': ' if exc.filename else ''}{exc.strerror or exc}",
                            hint=os_hint(exc, exc.filename))
        _render_error(err, as_json)
        return 1
    except Exception as exc:  # a bug in labbuild, not bad input: still no traceback
        if os.environ.get("LABBUILD_DEBUG"):
            raise
        err = LabbuildError(f"internal error: {type(exc).__name__}: {exc}",
                            hint="re-run with LABBUILD_DEBUG=1 for the traceback and report it")
        _render_error(err, as_json)
        return 1
    return rv if isinstance(rv, int) else 0


def _render_error(exc: LabbuildError, as_json: bool) -> None:
    if as_json:
        click.echo(json.dumps(exc.to_json(), sort_keys=True, indent=2))
        click.echo(f"error: {exc.message}", err=True)
    else:
        click.echo(exc.render(), err=True)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
