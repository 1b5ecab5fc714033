"""``access/home/index.html``: the front door's home page, rendered per release.

One self-contained HTML page (inline CSS, no script, no font or image fetched; a
Content-Security-Policy that allows nothing else) listing the profile's services from
``access/lab.json`` (the front-door contract's shape): each with its link, what it is for, the
roles that may open it, how it signs in, what a project is there (a collapsed
``<details>``, when lab.json has its ``projects_note``), and a link to its runbook. The runbook links are
relative (``runbooks/<svc>.md`` by default: the page is served with the bundle's runbooks next to
it). The layout is a grid of cards that becomes one column on a phone-width screen.

Every free-text value (descriptions of services, roles and projects, names) is HTML-escaped,
quotes included; a service URL must be http(s) with a host — anything else (``javascript:``, a
relative path) is refused, since escaping cannot make such a link safe. Same input, same bytes.
"""

from __future__ import annotations

import html
import re
from typing import Any, Mapping
from urllib.parse import quote, urlsplit

from ..errors import BlueprintError

SIGN_IN = {"oidc": "single sign-on (OpenID Connect)", "forward-auth": "at the front door (forward-auth)"}
_CONTROL = re.compile(r"[\x00-\x20\x7f]")

CSS = """\
:root{color-scheme:light dark;--bg:#f6f7f9;--fg:#1c2330;--muted:#5b6472;--card:#fff;--line:#d9dde3;
--accent:#1f5fbf;--chip:#e8eef9}
@media (prefers-color-scheme:dark){:root{--bg:#12161c;--fg:#e6e9ee;--muted:#a3acb9;--card:#1b2129;
--line:#2c3440;--accent:#7fb0ff;--chip:#24344d}}
*{box-sizing:border-box}
body{margin:0;font:16px/1.5 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;background:var(--bg);
color:var(--fg);overflow-wrap:anywhere}
header,main,footer{max-width:72rem;margin:0 auto;padding:1rem}
header h1{margin:.5rem 0 .25rem;font-size:1.6rem}
header p{margin:0;color:var(--muted)}
.grid{display:grid;gap:1rem;grid-template-columns:repeat(auto-fill,minmax(min(100%,19rem),1fr));
padding:0;margin:0;list-style:none}
.card{background:var(--card);border:1px solid var(--line);border-radius:.75rem;padding:1rem;display:flex;
flex-direction:column;gap:.5rem}
.card h2{margin:0;font-size:1.15rem}
.card p{margin:0}
.desc{flex:1}
.meta{color:var(--muted);font-size:.9rem}
.chip{display:inline-block;background:var(--chip);border-radius:1rem;padding:0 .6rem;margin:.1rem .2rem .1rem 0;
font-size:.85rem}
.links{display:flex;flex-wrap:wrap;gap:.5rem}
.links a{display:inline-block;padding:.45rem .9rem;border-radius:.5rem;border:1px solid var(--accent);
text-decoration:none;color:var(--accent);min-height:2.5rem}
.links a.open{background:var(--accent);color:var(--card)}
a{color:var(--accent)}
h2.section{font-size:1.2rem;margin:2rem 0 .5rem}
dl{display:grid;grid-template-columns:max-content 1fr;gap:.25rem 1rem;margin:0}
dt{font-weight:600}
dd{margin:0}
@media (max-width:30rem){dl{grid-template-columns:1fr}dd{margin-bottom:.5rem}header h1{font-size:1.35rem}}
footer{color:var(--muted);font-size:.85rem}
"""


def _e(value: Any) -> str:
    """``value`` as HTML text or attribute value: ``& < > " '`` escaped."""
    return html.escape(str(value), quote=True)


def _problem(path: str, message: str) -> BlueprintError:
    return BlueprintError(f"access/lab.json: {path}: {message}",
                          hint="fix [access] in blueprints/lab.toml or the service's [front_door]")


def _text(data: Mapping[str, Any], key: str, path: str) -> str:
    value = data.get(key, "")
    if not isinstance(value, str):
        raise _problem(f"{path}.{key}", "must be a string")
    return value


def _url(value: Any, path: str) -> str:
    """An http(s) URL with a host, or BlueprintError."""
    if not isinstance(value, str) or _CONTROL.search(value):
        raise _problem(path, "must be a URL without spaces or control characters")
    parts = urlsplit(value)
    if parts.scheme not in ("https", "http") or not parts.hostname:
        raise _problem(path, f"{value!r} is not an http(s) URL with a host")
    return value


def _mapping(access: Mapping[str, Any], key: str) -> Mapping[str, Any]:
    value = access.get(key, {})
    if not isinstance(value, Mapping):
        raise _problem(key, "must be a mapping")
    return value


def _card(name: str, svc: Mapping[str, Any], roles: list[str], runbook_base: str) -> str:
    path = f"services.{name}"
    if not isinstance(svc, Mapping):
        raise _problem(path, "must be a mapping")
    url = _url(svc.get("url"), f"{path}.url")
    allowed = svc.get("roles", [])
    if not isinstance(allowed, list) or not all(isinstance(r, str) for r in allowed):
        raise _problem(f"{path}.roles", "must be a list of role names")
    ordered = [r for r in roles if r in allowed] + sorted(r for r in allowed if r not in roles)
    chips = "".join(f'<span class="chip">{_e(r)}</span>' for r in ordered) or "no role"
    kind = _text(svc, "sign_in", path)
    sign_in = SIGN_IN.get(kind, kind)
    runbook = runbook_base + quote(name, safe="") + ".md"
    description = _text(svc, "description", path)
    note = svc.get("projects_note")
    if note is not None and not isinstance(note, Mapping):
        raise _problem(f"{path}.projects_note", "must be a mapping")
    projects = ("" if note is None else
                f'<details class="meta"><summary>Projects here</summary>'
                f'<p>{_e(_text(note, "what", path + ".projects_note"))}</p>'
                f'<p>Isolation: {_e(_text(note, "isolation", path + ".projects_note"))}</p></details>\n')
    return (f'<li class="card" id="svc-{_e(name)}">\n'
            f'<h2><a href="{_e(url)}">{_e(name)}</a></h2>\n'
            f'<p class="desc">{_e(description)}</p>\n'
            f'<p class="meta">Open to: {chips}</p>\n'
            + (f'<p class="meta">Sign-in: {_e(sign_in)}</p>\n' if sign_in else "")
            + projects
            + f'<p class="links"><a class="open" href="{_e(url)}">Open {_e(name)}</a>'
            f'<a class="runbook" href="{_e(runbook)}">Runbook</a></p>\n'
            "</li>\n")


def _terms(title: str, items: Mapping[str, Any], path: str) -> str:
    if not items:
        return ""
    rows = []
    for key in sorted(items):
        if not isinstance(items[key], str):
            raise _problem(f"{path}.{key}", "must be a string")
        rows.append(f"<dt>{_e(key)}</dt><dd>{_e(items[key])}</dd>")
    return f'<h2 class="section">{_e(title)}</h2>\n<dl>\n' + "\n".join(rows) + "\n</dl>\n"


def render_home(access: Mapping[str, Any], *, runbook_base: str = "runbooks/", title: str = "Local AI Lab") -> bytes:
    """The home page of ``access`` (the contract's access/lab.json as a dict), as UTF-8 bytes.

    ``runbook_base``: what each runbook link starts with (the page links ``<base><svc>.md``).
    """
    if not isinstance(access, Mapping):
        raise _problem("(top level)", "must be a mapping")
    domain = _text(access, "domain", "access")
    roles = _mapping(access, "roles")
    services = _mapping(access, "services")
    cards = "".join(_card(name, services[name], list(roles), runbook_base) for name in sorted(services))
    lede = (f"Every service of this lab, behind one sign-in at <strong>{_e(domain)}</strong>. "
            "A service opens only for the roles listed on it; its runbook says how to fix it.")
    page = [
        "<!DOCTYPE html>",
        '<html lang="en">',
        "<head>",
        '<meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; style-src 'unsafe-inline'\">",
        '<meta name="referrer" content="no-referrer">',
        f"<title>{_e(title)}</title>",
        f"<style>\n{CSS}</style>",
        "</head>",
        "<body>",
        f"<header>\n<h1>{_e(title)}</h1>\n<p>{lede}</p>\n</header>",
        "<main>",
        f'<h2 class="section">Services</h2>\n<ul class="grid">\n{cards}</ul>' if cards
        else '<p>No service is behind the front door in this release.</p>',
        _terms("Roles", roles, "roles") + _terms("Projects", _mapping(access, "projects"), "projects"),
        "</main>",
        "<footer>Rendered by labbuild for this release.</footer>",
        "</body>",
        "</html>",
        "",
    ]
    return "\n".join(page).encode("utf-8")
