"""Free text as data: one escaper per consumer, each tested against that consumer.

A blueprint's strings end up in files other programs parse. Each function
here turns a value into the consumer's syntax so that the consumer reads back
exactly the value — or says why it cannot, so ``validate`` refuses it:

- env files (``lab.env``), read by compose's ``--env-file`` parser AND by
  ``sh`` (``. ./lab.env`` under dash and busybox): ``env_value`` /
  ``env_value_problem`` / ``parse_env_file``;
- Markdown (runbooks), read by a CommonMark renderer: ``markdown_text`` (read back by
  ``markdown_text_plain``), ``markdown_code``;
- YAML (compose.yaml) is written by PyYAML's safe dumper and JSON by
  ``fsutil.canonical_json``: both escape every string already; compose's own
  ``$`` interpolation is escaped by ``render.envfile.compose_literal``.

``tests/test_escape.py`` generates arbitrary strings (hypothesis) and checks
each consumer reads back exactly the input, or the input is refused.
"""

from __future__ import annotations

import re

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def env_value_problem(value: str) -> str | None:
    """Why ``value`` cannot be written into an env file that compose and sh read alike, or None."""
    if _CONTROL.search(value):
        return ("contains a newline or another control character, which an env file cannot carry "
                "so that both compose and sh read it back")
    if ("'" in value or "\\" in value) and "`" in value:
        return ("holds ' or \\ together with `: single quotes cannot carry ' (and compose reads a backslash "
                "in them as an escape), and compose and sh disagree on a double-quoted backtick")
    return None


def env_value(value: str) -> str:
    """``value`` quoted for an env file: single quotes (literal for both compose and sh), or,
    when it holds ``'`` or a backslash (compose treats ``\\`` in single quotes as an escape),
    double quotes with ``\\``, ``"`` and ``$`` escaped (both unescape those alike).
    ValueError for what ``env_value_problem`` refuses."""
    problem = env_value_problem(value)
    if problem:
        raise ValueError(f"{value!r} {problem}")
    if "'" not in value and "\\" not in value:
        return f"'{value}'"
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"').replace("$", "\\$") + '"'


def parse_env_file(text: str) -> dict[str, str]:
    """Read back an env file written with ``env_value`` (its inverse)."""
    out: dict[str, str] = {}
    for line in text.split("\n"):  # not splitlines(): values may hold \x1e, \u2028, ...
        if not line.strip() or line.lstrip().startswith("#") or "=" not in line:
            continue
        key, value = line.split("=", 1)
        if len(value) >= 2 and value[0] == value[-1] == "'":
            value = value[1:-1]
        elif len(value) >= 2 and value[0] == value[-1] == '"':
            value = re.sub(r"\\([\\\"$])", r"\1", value[1:-1])
        out[key.strip()] = value
    return out


_MD_INLINE = re.compile(r"([\\`*_\[\]<>&|~!#])")
_MD_LINE_START = re.compile(r"^([-+=]|\d+(?=[.)]))")


def markdown_text(text: str) -> str:
    """Plain ``text`` as one line of CommonMark that renders as exactly ``text`` (control
    characters as spaces, surrounding space dropped): inline markup, HTML, entities,
    table pipes and line-start markers are backslash-escaped."""
    text = _CONTROL.sub(" ", text).strip()
    escaped = _MD_INLINE.sub(r"\\\1", text)
    m = _MD_LINE_START.match(escaped)
    if m:
        cut = m.end() if m[1][0].isdigit() else m.start()
        escaped = escaped[:cut] + "\\" + escaped[cut:]
    return escaped


_MD_ESCAPE = re.compile(r"\\([!-/:-@\[-`{-~])")      # CommonMark: a backslash before ASCII punctuation


def markdown_text_plain(escaped: str) -> str:
    """The plain text of a ``markdown_text`` line (its inverse, but for the control characters
    and surrounding space it dropped): every backslash escape undone. For a reader of the
    bundle's runbooks that needs the text itself (the Helm export's service descriptions)."""
    return _MD_ESCAPE.sub(r"\1", escaped)


def markdown_code(text: str) -> str:
    """``text`` (one non-empty line, e.g. a command) as one CommonMark code span that renders as
    exactly ``text`` (control characters as spaces): the fence is one backtick longer than the
    longest run inside, padded with a space where CommonMark strips one."""
    text = _CONTROL.sub(" ", text)
    if not text:
        return ""
    longest = max((len(run) for run in re.findall(r"`+", text)), default=0)
    fence = "`" * (longest + 1)
    padded = text.strip(" ") and (longest or text.startswith(" ") and text.endswith(" "))
    return f"{fence} {text} {fence}" if padded else f"{fence}{text}{fence}"


def markdown_block(text: str) -> str:
    """Plain multi-line ``text`` as CommonMark: each line escaped, lines joined by hard
    breaks (a trailing backslash), blank lines dropped — renders as the lines of ``text``."""
    lines = [markdown_text(line) for line in text.split("\n")]
    return "\\\n".join(line for line in lines if line)
