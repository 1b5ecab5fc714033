"""The front door's home page (issue 23): builder.render.homepage.render_home.

The page is checked as HTML (escaping, links, refusals, same bytes for the same input) and in a
real browser: Debian's headless Chromium loads it from a local http.server on 127.0.0.1 (with the
runbooks next to it, as the front door serves them), takes screenshots at desktop and phone
width, dumps the DOM (every service linked) and lays the page out in a phone-width frame (no
horizontal overflow, one column; several columns on a desktop). Every runbook link is fetched
from the server: 200. LABBUILD_HOME_SCREENSHOTS=DIR keeps the two screenshots in DIR.
"""

from __future__ import annotations

import functools
import html.parser
import os
import shutil
import struct
import subprocess
import threading
import zlib
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urljoin

import httpx
import pytest
from support.dockerenv import require_tool

from builder.errors import BlueprintError
from builder.render.homepage import render_home

HOSTILE = "<script>alert(\"pwned\")</script> & 'single' \"double\" </li><img src=x onerror=alert(1)>"
SERVICES = {
    "open-webui": ("Chat with the lab's models; share prompts and knowledge with your projects",
                   ["admin", "analyst", "user"], "oidc"),
    "node-red": ("Low-code flows wiring the lab's APIs together (admins deploy, analysts read)",
                 ["admin", "analyst"], "oidc"),
    "n8n": ("Workflow automation with 400+ integrations", ["admin", "analyst"], "forward-auth"),
    "grafana": ("Dashboards of the lab's metrics and traces", ["admin", "analyst", "user"], "oidc"),
    "langfuse": ("Traces, prompts and evaluations of LLM calls", ["admin", "analyst"], "oidc"),
    "prometheus": ("The metrics store and its query page", ["admin"], "forward-auth"),
    "jupyter": ("Notebooks next to the lab's data", ["admin", "analyst"], "forward-auth"),
    "hostile": (HOSTILE, ["admin"], "forward-auth"),
}


def access(services: dict = SERVICES) -> dict:
    return {"domain": "lab.localhost", "provider": "authelia",
            "roles": {"admin": "Runs the lab: every service, its settings and its users",
                      "analyst": "Builds and inspects: flows, notebooks, dashboards, traces; no admin settings",
                      "user": "Uses the chat & the apps shared with them <b>bold?</b>"},
            "projects": {"default": "Everyone's shared workspace", "alpha": "Team \"alpha\" & friends"},
            "services": {name: {"description": desc, "url": f"https://{name}.lab.localhost/", "roles": roles,
                                "sign_in": sign_in, "runbook": f"runbooks/{name}.md"}
                         for name, (desc, roles, sign_in) in services.items()}}


class _Page(html.parser.HTMLParser):
    """Tags, hrefs and text of a page, as a browser's parser would see them."""

    def __init__(self, text: str) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[str] = []
        self.hrefs: list[str] = []
        self.text: list[str] = []
        self.attrs: dict[str, str] = {}
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        self.attrs.update({f"{tag}.{k}": v or "" for k, v in attrs})
        self.hrefs += [v for k, v in attrs if k == "href"]

    def handle_data(self, data):
        self.text.append(data)


# --------------------------------------------------------------------------- the HTML

def test_every_service_is_linked_with_its_roles_and_runbook_and_text_is_escaped():
    page = render_home(access())
    parsed = _Page(page.decode())
    assert "script" not in parsed.tags and "img" not in parsed.tags       # the hostile text stayed text
    text = "".join(parsed.text)
    assert HOSTILE in text and "Team \"alpha\" & friends" in text and "<b>bold?</b>" in text
    for name in SERVICES:
        assert f"https://{name}.lab.localhost/" in parsed.hrefs and f"runbooks/{name}.md" in parsed.hrefs
    assert "http" not in "".join(h for h in parsed.hrefs if not h.startswith("https://"))    # no other fetch
    assert "<link" not in page.decode() and "@import" not in page.decode() and "url(" not in page.decode()
    assert '<meta name="viewport" content="width=device-width, initial-scale=1">' in page.decode()


def test_the_page_is_deterministic_and_its_runbook_links_configurable():
    a = render_home(access())
    shuffled = access(dict(reversed(list(SERVICES.items()))))
    assert render_home(shuffled) == a == render_home(access())
    other = _Page(render_home(access(), runbook_base="/docs/run books/", title="My <lab>").decode())
    assert "/docs/run books/node-red.md" in other.hrefs and "My <lab>" in "".join(other.text)


@pytest.mark.parametrize("url", ["javascript:alert(1)", "//evil.example/", "/relative", "https://",
                                 "https://a b.lab/", "data:text/html,x", 42])
def test_a_service_url_that_is_not_http_with_a_host_is_refused(url):
    bad = access({"x": ("d", ["admin"], "oidc")})
    bad["services"]["x"]["url"] = url
    with pytest.raises(BlueprintError, match=r"access/lab.json: services\.x\.url"):
        render_home(bad)


def test_an_empty_release_says_so():
    assert b"No service is behind the front door" in render_home(access({}))


# --------------------------------------------------------------------------- a real browser

def _png(path: Path) -> tuple[int, int, int]:
    """(width, height, distinct colours) of an 8-bit RGB/RGBA PNG, decoded here (no imaging library)."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", path
    pos, idat, header = 8, b"", None
    while pos < len(data):
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        body = data[pos + 8:pos + 8 + length]
        if kind == b"IHDR":
            header = struct.unpack(">IIBBBBB", body)
        elif kind == b"IDAT":
            idat += body
        pos += 12 + length
    width, height, depth, colour = header[:4]
    assert depth == 8 and colour in (2, 6), header
    bpp = 3 if colour == 2 else 4
    raw, stride, prev, colours = zlib.decompress(idat), width * bpp, bytearray(width * bpp), set()
    for y in range(height):
        ftype, line = raw[y * (stride + 1)], bytearray(raw[y * (stride + 1) + 1:(y + 1) * (stride + 1)])
        for i in range(stride):
            a, b = line[i - bpp] if i >= bpp else 0, prev[i]
            c = prev[i - bpp] if i >= bpp else 0
            pred = {0: 0, 1: a, 2: b, 3: (a + b) // 2}.get(ftype)
            if pred is None:                                          # Paeth
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                pred = a if pa <= pb and pa <= pc else (b if pb <= pc else c)
            line[i] = (line[i] + pred) & 0xFF
        if y % 4 == 0:
            colours.update(bytes(line[i:i + 3]) for i in range(0, stride, bpp * 4))
        prev = line
    return width, height, len(colours)


@pytest.fixture
def served(tmp_path):
    """index.html, runbooks/<svc>.md and a layout probe, served from 127.0.0.1."""
    root = tmp_path / "www"
    (root / "runbooks").mkdir(parents=True)
    (root / "index.html").write_bytes(render_home(access()))
    for name in SERVICES:
        (root / "runbooks" / f"{name}.md").write_text(f"# {name}\n\nWhat to do at 3 a.m.\n")
    # test-only probe (the page itself has no script): frames index.html at phone and desktop width
    # and writes what the layout came to into its own DOM for --dump-dom
    (root / "probe.html").write_text("""<!DOCTYPE html><html><body>
<iframe id="phone" src="index.html" style="width:390px;height:800px;border:0"></iframe>
<iframe id="desk" src="index.html" style="width:1280px;height:800px;border:0"></iframe>
<script>
function measure(id) {
  var d = document.getElementById(id).contentDocument;
  var lefts = {};
  d.querySelectorAll('.card').forEach(function (c) { lefts[c.getBoundingClientRect().left] = 1; });
  document.body.setAttribute('data-' + id, d.documentElement.scrollWidth + ' ' + d.documentElement.clientWidth
                             + ' ' + Object.keys(lefts).length);
}
window.addEventListener('load', function () { measure('phone'); measure('desk'); });
</script></body></html>""")
    handler = functools.partial(type("Quiet", (SimpleHTTPRequestHandler,), {"log_message": lambda *a: None}),
                                directory=str(root))
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/"
    server.shutdown()
    server.server_close()


def _chromium(tmp_path: Path, *args: str) -> str:
    exe = shutil.which("chromium") or shutil.which("chromium-browser") or require_tool("chromium")
    profile = tmp_path / f"chromium-{len(list(tmp_path.glob('chromium-*')))}"
    proc = subprocess.run([exe, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                           "--disable-component-update", "--disable-sync", "--no-first-run", "--hide-scrollbars",
                           f"--user-data-dir={profile}", *args], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout


def test_the_page_in_headless_chromium_at_desktop_and_phone_width(tmp_path, served):
    shots = {}
    for label, size in (("desktop", (1280, 1000)), ("phone", (390, 1600))):
        shot = tmp_path / f"home-{label}.png"
        _chromium(tmp_path, f"--screenshot={shot}", f"--window-size={size[0]},{size[1]}", served + "index.html")
        width, height, colours = _png(shot)
        assert (width, height) == size and colours > 20, (label, width, height, colours)    # not a blank page
        shots[label] = shot
    if keep := os.environ.get("LABBUILD_HOME_SCREENSHOTS"):
        for label, shot in shots.items():
            shutil.copyfile(shot, Path(keep) / f"home-{label}.png")

    dom = _Page(_chromium(tmp_path, "--dump-dom", "--window-size=390,1600", served + "index.html"))
    assert "script" not in dom.tags and HOSTILE in "".join(dom.text)
    runbooks = [h for h in dom.hrefs if h.endswith(".md")]
    for name in SERVICES:
        assert f"https://{name}.lab.localhost/" in dom.hrefs, name
    assert sorted(runbooks) == sorted(f"runbooks/{name}.md" for name in SERVICES)
    with httpx.Client(timeout=10) as client:
        for href in runbooks:
            answer = client.get(urljoin(served + "index.html", href))
            assert answer.status_code == 200 and answer.text.startswith("# "), href
        assert client.get(urljoin(served, "runbooks/missing.md")).status_code == 404     # the check can fail

    probe = _Page(_chromium(tmp_path, "--dump-dom", "--virtual-time-budget=5000", "--window-size=1700,900",
                            served + "probe.html"))
    phone = [int(x) for x in probe.attrs["body.data-phone"].split()]
    desk = [int(x) for x in probe.attrs["body.data-desk"].split()]
    assert phone[0] <= phone[1] and phone[2] == 1, phone          # no sideways scrolling; one column
    assert desk[0] <= desk[1] and desk[2] >= 3, desk              # several columns on a desktop


def test_a_services_projects_note_is_shown_escaped_and_only_when_given():
    doc = access()
    doc["services"]["grafana"]["projects_note"] = {"what": HOSTILE, "isolation": "none </details><b>x</b>"}
    parsed = _Page(render_home(doc).decode())
    assert "script" not in parsed.tags and "img" not in parsed.tags and "b" not in parsed.tags
    assert parsed.tags.count("details") == 1 and parsed.tags.count("summary") == 1
    text = "".join(parsed.text)
    assert HOSTILE in text and "Isolation: none </details><b>x</b>" in text
    assert "<details" not in render_home(access()).decode()
    doc["services"]["grafana"]["projects_note"] = "a string"
    with pytest.raises(BlueprintError, match=r"services\.grafana\.projects_note: must be a mapping"):
        render_home(doc)
