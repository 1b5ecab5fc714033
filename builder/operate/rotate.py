"""`labbuild secrets rotate` and `secrets set`: change a secret everywhere it lives, or nowhere.

A change goes through three places, in this order, under the DIR lock:

1. the *holder* — ``[secrets.NAME.holder] exec`` runs in the owning service's running container
   with the new value in ``$LAB_SECRET_NEW`` and the old one in ``$LAB_SECRET_OLD`` (the exec's
   environment: never argv, never a log), e.g. ``ALTER ROLE ... PASSWORD`` for a database whose
   ``POSTGRES_PASSWORD`` only mattered at its first start;
2. ``DIR/.env``, atomically (0600);
3. the *consumers* — every service the release's compose.yaml gives the key to, owner included —
   recreated by compose (``up -d --no-deps``; a stopped one is recreated stopped) and awaited
   until healthy in dependency order.

When any step fails, the old value is put back the same way (holder with the values swapped,
``.env``, consumers) and the command says what failed and that it rolled back. Before step 1 a
journal (``DIR/.secrets-journal.json``, 0600, with both values of every key) is written; it is
removed when the change or its rollback is complete. A command killed at any moment (kill -9)
leaves it behind, and the next ``secrets rotate``/``set`` on DIR first finishes that change —
forward (holder, ``.env``, consumers with the journal's new values: every step is repeatable) or,
when it was rolling back or going forward fails, back — so the holder and ``.env`` end with the
same value. A rollback that fails keeps the journal, and says to run the command again.

What may change is the blueprint's decision, carried in manifest.json (``ManifestRotation``):
``rotate = false`` keys are refused naming the reason, undecided keys naming the missing
decision, supplied keys by ``rotate`` (they are set). Every outcome is an entry of
``DIR/audit.log``; no value is ever printed: holder output is shown with both values masked.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from ..errors import InstallError
from ..format.files import SECRETS_EXAMPLE
from ..format.manifest import Manifest
from ..format.secrets_example import read_secrets_example
from ..fsutil import atomic_write, canonical_json
from ..host.auditlog import check_appendable, record
from ..host.compose import Project, key_consumers
from ..host.dotenv import env_values, plain_value, raw_value, read_env, replace_values, without_keys
from ..host.engine import check_project_owner, container_address, containers, docker_client, run_exec
from ..host.health import await_installed
from ..host.kvstore import OPENBAO, sync_openbao
from ..host.labdir import ENV_FILE, JOURNAL_FILE, LabDir, Say, dir_lock, preflight, quiet
from ..install.inputs import startable_optional
from ..install.secrets import generate_secret
from .secrets import list_secrets

JOURNAL_FORMAT = 1
MASK = "********"


@dataclass(frozen=True)
class Change:
    """One key's change: its .env text before (None: no value yet) and its new value."""

    key: str
    owner: str
    old_raw: str | None
    new: str
    holder: tuple[str, ...] = ()

    @property
    def old(self) -> str:
        return "" if self.old_raw is None else plain_value(self.old_raw)

    def to_json(self) -> dict[str, Any]:
        return {"key": self.key, "owner": self.owner, "old_raw": self.old_raw, "new": self.new,
                "holder": list(self.holder)}


@dataclass
class RotationResult:
    ok: bool
    command: str
    keys: list[str]
    services: list[str] = field(default_factory=list)      # recreated
    outcome: str = "ok"                                     # ok | rolled-back | failed
    failure: str | None = None
    resumed: "RotationResult | None" = None                 # an interrupted change this run finished first
    skipped: dict[str, str] = field(default_factory=dict)   # --due: key -> why it was not rotated

    def to_json(self) -> dict[str, Any]:
        return {"ok": self.ok, "command": self.command, "keys": self.keys, "services": self.services,
                "outcome": self.outcome, "error": self.failure, "skipped": self.skipped,
                "resumed": self.resumed.to_json() if self.resumed else None}


class StepFailed(Exception):
    """A step of a change failed; the message says which (values masked)."""


def mask(text: str, changes: Iterable[Change]) -> str:
    """``text`` with every old and new value (and its .env form) replaced by ``MASK``."""
    values = sorted({v for c in changes for v in (c.new, c.old, c.old_raw or "", raw_value(c.new)) if len(v) >= 4},
                    key=len, reverse=True)
    for value in values:
        text = text.replace(value, MASK)
    return text


# --------------------------------------------------------------------------- the journal

def write_journal(path: Path, command: str, phase: str, changes: list[Change], started: str | None = None) -> None:
    data = {"format": JOURNAL_FORMAT, "command": command, "phase": phase, "changes": [c.to_json() for c in changes],
            "started": started or _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")}
    atomic_write(path, canonical_json(data), mode=0o600)


def read_journal(path: Path) -> tuple[str, str, list[Change]]:
    """(command, phase, changes) of an interrupted change; InstallError naming the file when damaged."""
    try:
        data = json.loads(path.read_bytes())
        changes = [Change(key=c["key"], owner=c["owner"], old_raw=c["old_raw"], new=c["new"],
                          holder=tuple(c["holder"])) for c in data["changes"]]
        if data["format"] != JOURNAL_FORMAT or data["phase"] not in ("apply", "rollback"):
            raise ValueError("unknown format or phase")
        return str(data["command"]), data["phase"], changes
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise InstallError(f"{path}: cannot read the journal of an interrupted rotation ({str(exc)[:200]})",
                           hint="it holds the old and new values of the keys it names: compare them with "
                                "DIR/.env and the services, fix by hand, then remove the file") from None


# --------------------------------------------------------------------------- one change, and its undoing

@dataclass
class Install:
    """What a change needs of the install: where, which release, the engine."""

    dir: Path
    release: Path
    manifest: Manifest
    client: Any
    timeout: float
    say: Say

    @property
    def journal(self) -> Path:
        return self.dir / JOURNAL_FILE

    def consumers(self, changes: list[Change]) -> list[str]:
        reads = key_consumers(self.release)
        return sorted({s for c in changes for s in (c.owner, *reads.get(c.key, ())) if s in self.manifest.services})


@dataclass
class Done:
    """How far a change got in this process (a resumed one: assume everything)."""

    holders: list[str] = field(default_factory=list)     # keys whose holder command succeeded
    env: bool = False

    @classmethod
    def everything(cls, changes: list[Change]) -> "Done":
        return cls(holders=[c.key for c in changes], env=True)


def _run_holders(inst: Install, changes: list[Change], back: bool, done: Done) -> None:
    found = containers(inst.client, inst.manifest.lab)
    for c in (reversed(changes) if back else changes):
        if back and c.key not in done.holders:
            continue
        if not c.holder or (back and c.old_raw is None):
            continue
        box = found.get(c.owner)
        if box is None or box.status != "running":
            raise StepFailed(f"{c.owner} holds {c.key} but is {box.status if box else 'missing'}: its holder "
                             "command cannot run")
        new, old = (c.old, c.new) if back else (c.new, c.old)
        inst.say(f"{c.owner}: changing {c.key} where it is held ({c.holder[0]} ...)" if not back else
                 f"{c.owner}: putting the old {c.key} back where it is held")
        code, output = run_exec(inst.client, box.id, c.holder, {"LAB_SECRET_NEW": new, "LAB_SECRET_OLD": old},
                                timeout=inst.timeout)
        if code != 0:
            tail = " / ".join(mask(output, changes).strip().splitlines()[-5:]) or "(no output)"
            raise StepFailed(f"the holder command of {c.key} in {c.owner} "
                             + ("did not finish in time" if code is None else f"exited {code}") + f": {tail}")
        if not back:
            done.holders.append(c.key)


def _write_env(inst: Install, changes: list[Change], back: bool) -> None:
    text = read_env(inst.dir)
    if back:
        text, _ = replace_values(text, {c.key: c.old_raw for c in changes if c.old_raw is not None})
        text = without_keys(text, {c.key for c in changes if c.old_raw is None})
    else:
        text, _ = replace_values(text, {c.key: raw_value(c.new) for c in changes})
    atomic_write(inst.dir / ENV_FILE, text, mode=0o600)


def _recreate(inst: Install, changes: list[Change]) -> list[str]:
    """Recreate the consumers of ``changes`` (running ones started, stopped ones left stopped, an
    optional one started once its supplied secrets exist) and wait until they are healthy."""
    m = inst.manifest
    env_text = read_env(inst.dir)
    startable = startable_optional(m, env_text)
    found = containers(inst.client, m.lab)
    wanted = inst.consumers(changes)
    start = [s for s in wanted if (s in found and found[s].status in ("running", "restarting"))
             or (s not in found and (not m.services[s].optional or s in startable))]
    stopped = [s for s in wanted if s in found and s not in start]
    project = Project(name=m.lab, install_dir=inst.dir, profiles=tuple(startable))
    if stopped:
        project.run("up", "--no-start", "--no-deps", *stopped, timeout=inst.timeout)
    if not start:
        return []
    inst.say(f"recreating {', '.join(start)}: docker compose up -d --no-deps")
    project.run("up", "-d", "--no-deps", *start, timeout=inst.timeout + 120)
    _await(inst, start)
    return start


def _await(inst: Install, services: list[str]) -> None:
    m = inst.manifest

    def state(svc: str) -> str | None:
        c = containers(inst.client, m.lab).get(svc)
        return "missing" if c is None else c.status

    depends = {s: [d for d in m.services[s].depends_on if d in services] for s in services}
    results = await_installed(inst.client, m.lab, {s: m.services[s] for s in services}, depends, inst.timeout,
                              say=inst.say, container_state=state)
    bad = [r for r in results.values() if not r.ok]
    deadline = time.monotonic() + inst.timeout
    for svc in [s for s in services if results[s].state == "no-probe"]:
        while True:      # no host-side probe: its container must run (and be healthy, when it checks itself)
            c = containers(inst.client, m.lab).get(svc)
            health = ((c.attrs.get("State") or {}).get("Health") or {}).get("Status") if c is not None else None
            if c is not None and c.status == "running" and health in (None, "healthy"):
                break
            if c is None or c.status in ("exited", "dead") or health == "unhealthy" or time.monotonic() > deadline:
                raise StepFailed(f"{svc} is {c.status if c else 'missing'}"
                                 + (f" ({health})" if health else "") + " after it was recreated")
            time.sleep(0.5)
    if bad:
        raise StepFailed(f"{bad[0].service} is not healthy after it was recreated: {bad[0].detail}")


def _forward(inst: Install, changes: list[Change], done: Done) -> list[str]:
    _run_holders(inst, changes, False, done)
    _write_env(inst, changes, back=False)
    done.env = True
    return _recreate(inst, changes)


def _back(inst: Install, command: str, changes: list[Change], started: str, done: Done) -> str | None:
    """Put the old values back wherever ``done`` says the new ones may be; None when that worked,
    else what failed. A holder whose command failed is not run again: it changed nothing."""
    write_journal(inst.journal, command, "rollback", changes, started)
    failed = []
    steps = [lambda: _run_holders(inst, changes, True, done)]
    if done.env:
        steps += [lambda: _write_env(inst, changes, back=True), lambda: _recreate(inst, changes)]
    for step in steps:
        try:
            step()
        except (StepFailed, InstallError) as exc:
            failed.append(mask(exc.args[0] if isinstance(exc, StepFailed) else exc.message, changes))
    return "; ".join(failed) or None


def run_change(inst: Install, command: str, changes: list[Change], *, started: str | None = None,
               phase: str = "apply", resumed: bool = False) -> RotationResult:
    """Apply ``changes`` (or, with ``phase`` rollback, finish undoing them); see the module docstring.
    ``resumed``: a killed command's change, of which any step may have happened."""
    keys = [c.key for c in changes]
    started = started or _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    owners = sorted({c.owner for c in changes})
    shown = command + (" (resumed)" if resumed else "")
    result = RotationResult(ok=False, command=shown, keys=keys)
    failure = None
    done = Done() if phase == "apply" and not resumed else Done.everything(changes)
    if phase == "apply":
        write_journal(inst.journal, command, "apply", changes, started)
        try:
            result.services = _forward(inst, changes, done)
            result.ok = True
        except (StepFailed, InstallError) as exc:
            failure = mask(exc.args[0] if isinstance(exc, StepFailed) else exc.message, changes)
            inst.say(f"failed: {failure}; putting the old value(s) back")
            done = Done.everything(changes) if resumed else done
    if not result.ok:
        undo_failed = _back(inst, command, changes, started, done)
        result.outcome = "failed" if undo_failed else "rolled-back"
        untouched = not done.holders and not done.env
        result.failure = ((f"{failure}; " if failure else "") +
                          (f"putting the old value(s) back failed too: {undo_failed}" if undo_failed
                           else f"nothing was changed: {', '.join(keys)} keep their value(s)" if untouched
                           else f"the old value(s) of {', '.join(keys)} are back in place (holder, {ENV_FILE}, "
                                "services)"))
    if result.outcome != "failed":
        inst.journal.unlink()
    record(inst.dir, shown, keys, sorted(set(owners) | set(result.services)), result.outcome,
           detail=result.failure or "")
    if result.ok:        # the lab's OpenBao, if any, gets DIR/.env's new values (a copy: .env wins)
        sync_openbao(inst.dir, inst.manifest, services=owners, command=command, say=inst.say,
                     address=lambda: container_address(inst.client, inst.manifest.lab, OPENBAO))
    return result


def resume(inst: Install) -> RotationResult | None:
    """Finish the change a killed command left in the journal (see the module docstring)."""
    if not inst.journal.exists():
        return None
    command, phase, changes = read_journal(inst.journal)
    inst.say(f"finishing an interrupted `{command}` of {', '.join(c.key for c in changes)} "
             + ("(putting the old values back)" if phase == "rollback" else "(applying the new values again)"))
    return run_change(inst, command, changes, phase=phase, resumed=True)


# --------------------------------------------------------------------------- the commands

def _refusal(manifest: Manifest, key: str, verb: str) -> str | None:
    owners = manifest.secret_owners
    if key not in owners:
        return None
    entry = manifest.services[owners[key]]
    policy = entry.rotation.get(key)
    supplied = key in {x.key for x in entry.supplied}
    if policy is None:
        return (f"{key} has no rotation decision: the blueprint of {owners[key]} says neither rotate = true nor "
                f"rotate = false for this secret (release {manifest.version})")
    if not policy.rotate:
        return f"{key} must never change: {policy.reason}"
    if verb == "rotate" and supplied:
        return f"{key} is supplied by the operator, not generated: set the new value with `labbuild secrets set`"
    return None


def _open(install_dir: str | os.PathLike, timeout: float, say: Say) -> Install:
    lab_dir = LabDir.at(install_dir)
    preflight(lab_dir.path)
    return Install(dir=lab_dir.path, release=lab_dir.current, manifest=lab_dir.manifest(), client=docker_client(),
                   timeout=timeout, say=say)


def _check_keys(manifest: Manifest, keys: Iterable[str], verb: str) -> None:
    unknown = [k for k in keys if k not in manifest.secret_owners]
    if unknown:
        raise InstallError(f"not a secret of {manifest.lab} {manifest.version}: {', '.join(unknown)}",
                           hint="its secrets: labbuild secrets list --dir DIR")
    refused = [why for k in keys if (why := _refusal(manifest, k, verb))]
    if refused:
        raise InstallError("; ".join(refused), hint="nothing was changed" + (
            "; a blueprint decides it with [secrets.NAME] rotate = true|false (and rotate_reason), in a release "
            "installed later" if any("no rotation decision" in r for r in refused) else ""))


def rotate(install_dir: str | os.PathLike, keys: Iterable[str] = (), *, due: bool = False, timeout: float = 300.0,
           say: Say = quiet) -> RotationResult:
    """Rotate ``keys`` (and, with ``due``, every generated key due) of the install; with neither,
    only finish an interrupted change."""
    inst = _open(install_dir, timeout, say)
    keys = list(dict.fromkeys(keys))
    with dir_lock(inst.dir):
        check_project_owner(inst.client, inst.manifest.lab, inst.dir)
        check_appendable(inst.dir)
        resumed = resume(inst)
        skipped: dict[str, str] = {}
        if due:
            for s in list_secrets(inst.dir).due:
                if s.supplied:
                    skipped[s.key] = "supplied: set its new value with labbuild secrets set"
                elif s.key not in keys:
                    keys.append(s.key)
        if not keys:
            if resumed is None and not due:
                raise InstallError("nothing to rotate", hint="name the keys (labbuild secrets list --dir DIR), or --due")
            result = resumed or RotationResult(ok=True, command="secrets rotate --due", keys=[])
            result.skipped = skipped
            return result
        _check_keys(inst.manifest, keys, "rotate")
        specs = {s.key: s for s in read_secrets_example((inst.release / SECRETS_EXAMPLE).read_text("utf-8"))} \
            if (inst.release / SECRETS_EXAMPLE).exists() else {}
        changes = [_change(inst, k, (specs[k].prefix + generate_secret(specs[k].generate, specs[k].length))
                           if k in specs else generate_secret("token", 32)) for k in keys]
        _check_holders(inst, changes)
        result = run_change(inst, "secrets rotate" + (" --due" if due else ""), changes)
        result.resumed, result.skipped = resumed, skipped
        return result


def set_secret(install_dir: str | os.PathLike, key: str, value: str, *, timeout: float = 300.0,
               say: Say = quiet) -> RotationResult:
    """Set ``key`` of the install to ``value`` the way ``rotate`` changes a key (a supplied key that
    has no value yet needs no rotation decision: nothing is replaced)."""
    try:
        raw_value(value)
    except ValueError as exc:
        raise InstallError(f"the value for {key} cannot be written into {ENV_FILE}: "
                           f"{str(exc).split(' ', 1)[1] if ' ' in str(exc) else exc}",
                           hint="pass the value on stdin as one line") from None
    inst = _open(install_dir, timeout, say)
    with dir_lock(inst.dir):
        check_project_owner(inst.client, inst.manifest.lab, inst.dir)
        check_appendable(inst.dir)
        resumed = resume(inst)
        supplied = {x.key for s in inst.manifest.services.values() for x in s.supplied}
        first = key in supplied and not plain_value(env_values(read_env(inst.dir)).get(key, ""))
        if not first or key not in inst.manifest.secret_owners:
            _check_keys(inst.manifest, [key], "set")
        change = _change(inst, key, value)
        if first:         # supplied for the first time: nothing is replaced, so no decision and no holder
            change = Change(key=key, owner=change.owner, old_raw=None, new=value)
        _check_holders(inst, [change])
        result = run_change(inst, "secrets set", [change])
        result.resumed = resumed
        return result


def _change(inst: Install, key: str, new: str) -> Change:
    owner = inst.manifest.secret_owners[key]
    policy = inst.manifest.services[owner].rotation.get(key)
    raw = env_values(read_env(inst.dir)).get(key)
    return Change(key=key, owner=owner, old_raw=raw if raw is not None and plain_value(raw) else None, new=new,
                  holder=policy.holder if policy else ())


def _check_holders(inst: Install, changes: list[Change]) -> None:
    """Before anything changes: every holder's container runs."""
    found = containers(inst.client, inst.manifest.lab)
    for c in changes:
        box = found.get(c.owner)
        if c.holder and (box is None or box.status != "running"):
            raise InstallError(f"{c.key} is held by {c.owner}, which is {box.status if box else 'not created'}: "
                               "its holder command must run first", hint=f"start it: cd {inst.dir} && docker "
                               f"compose up -d {c.owner}; nothing was changed")
