"""Automatic rotation: a cron line and a systemd service + timer that run
``labbuild secrets rotate --due --dir DIR`` daily, each quoted for the program that reads it.

- cron (crontab(5), /etc/cron.d format with a user field): the command is handed to ``/bin/sh -c``,
  so every word is quoted for sh (``shlex``); then every ``%`` is written ``\\%``, because cron turns
  an unescaped ``%`` into a newline (and removes the backslash of ``\\%``);
- systemd (systemd.service(5) "Command lines", systemd.unit(5) "Specifiers"): every word of
  ``ExecStart=`` double-quoted with ``\\`` and ``"`` escaped, ``%`` doubled (a specifier otherwise) and
  ``$`` doubled (an environment variable otherwise);
- Markdown (the bundle's runbook): each file in a fenced code block whose fence is longer than any
  backtick run inside (CommonMark 0.31, 4.5 "Fenced code blocks").

A DIR holding a control character (a newline would end the cron line or the unit's line) is refused.
Pure: shared by the bundle's runbook (built) and ``labbuild secrets schedule`` (on the target).
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
DEFAULT_LABBUILD = "/usr/local/bin/labbuild"
CRON_FILE = "/etc/cron.d/{lab}-secrets"
UNIT_DIR = "/etc/systemd/system"


@dataclass(frozen=True)
class Schedule:
    lab: str
    cron: str            # one line for /etc/cron.d/<lab>-secrets
    service: str         # <lab>-secrets-rotate.service
    timer: str           # <lab>-secrets-rotate.timer

    @property
    def unit(self) -> str:
        return f"{self.lab}-secrets-rotate"

    def markdown(self) -> str:
        """The three files and how to enable them, as CommonMark."""
        return "\n".join([
            f"cron, in `{CRON_FILE.format(lab=self.lab)}`:", "", fenced(self.cron), "",
            f"or systemd, `{UNIT_DIR}/{self.unit}.service`:", "", fenced(self.service), "",
            f"and `{UNIT_DIR}/{self.unit}.timer`, then `systemctl daemon-reload && systemctl enable --now "
            f"{self.unit}.timer`:", "", fenced(self.timer), ""])


def fenced(text: str) -> str:
    """``text`` as a CommonMark fenced code block that renders as exactly ``text``."""
    longest = max((len(run) for run in re.findall(r"`+", text)), default=0)
    fence = "`" * max(3, longest + 1)
    return f"{fence}\n{text}{'' if text.endswith(chr(10)) else chr(10)}{fence}"


def systemd_word(word: str) -> str:
    """One word of a systemd command line that systemd reads back as exactly ``word``."""
    return '"' + (word.replace("\\", "\\\\").replace('"', '\\"').replace("%", "%%").replace("$", "$$")) + '"'


def cron_command(argv: list[str]) -> str:
    """``argv`` as the command of a cron line: sh-quoted, with ``%`` escaped for cron."""
    return shlex.join(argv).replace("%", "\\%")


def rotation_schedule(install_dir: str, lab: str, labbuild: str = DEFAULT_LABBUILD) -> Schedule:
    """The cron line and systemd units for ``install_dir`` (absolute) of lab ``lab``; ValueError when a
    path cannot be written into them."""
    for what, value in (("install dir", install_dir), ("labbuild path", labbuild)):
        if _CONTROL.search(value):
            raise ValueError(f"the {what} {value!r} holds a control character: no cron line or unit can carry it")
        if not value.startswith("/"):
            raise ValueError(f"the {what} {value!r} is not absolute: cron and systemd need an absolute path")
    argv = [labbuild, "secrets", "rotate", "--due", "--dir", install_dir]
    cron = f"17 3 * * * root {cron_command(argv)} >>/var/log/{lab}-secrets.log 2>&1\n"
    service = (f"[Unit]\nDescription=Rotate the due secrets of {lab} (labbuild secrets rotate --due)\n"
               "Wants=docker.service\nAfter=docker.service\n\n"
               "[Service]\nType=oneshot\n"
               f"ExecStart={' '.join(systemd_word(w) for w in argv)}\n")
    timer = (f"[Unit]\nDescription=Daily rotation of the due secrets of {lab}\n\n"
             "[Timer]\nOnCalendar=daily\nRandomizedDelaySec=1h\nPersistent=true\n\n"
             "[Install]\nWantedBy=timers.target\n")
    return Schedule(lab=lab, cron=cron, service=service, timer=timer)
