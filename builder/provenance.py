"""``provenance.intoto.json``: SLSA Provenance v1 of a release, in an in-toto Statement v1, in a DSSE envelope.

What a release says about how it was made, in a form other tools check
(in-toto, securesystemslib, slsa-verifier-style policies):

- subjects: what was built, by digest — ``manifest.json`` (its sha256, which
  covers every file of the bundle) and each shipped image;
- ``buildDefinition``: ``buildType`` (labbuild's release), ``externalParameters``
  (lab, profile, version: what the maintainer chose), ``internalParameters``
  (the lock's inputs hash, the build epoch when given), ``resolvedDependencies``
  (each lab source file by sha256, the lab repository's git commit when known);
- ``runDetails.builder``: labbuild and its version.

No timestamp but the given build epoch, canonical JSON, deterministic
signatures: the same release gives the same bytes on any machine. The
envelope is signed with the release key under ``--sign`` and unsigned
(``signatures: []``) otherwise.

Pure: ``provenance_statement`` builds the statement, ``render_provenance``
the file bytes, ``read_provenance`` parses and checks them, and
``subject_problems`` compares the subjects with what a bundle holds.
"""

from __future__ import annotations

import datetime as _dt
import json
import re
from dataclasses import dataclass, field
from typing import Mapping

from .dsse import (
    IN_TOTO_PAYLOAD_TYPE,
    parse_envelope,
    sign_envelope,
    unsigned_envelope,
    verified_signature,
)
from .errors import BundleError
from .fsutil import canonical_json
from .signing import PrivateKey, PublicKey, raw_signature_form_ok

PROVENANCE_NAME = "provenance.intoto.json"
STATEMENT_TYPE = "https://in-toto.io/Statement/v1"
PREDICATE_TYPE = "https://slsa.dev/provenance/v1"
# labbuild's own identifiers (URIs, as SLSA wants; they name, they do not resolve).
BUILD_TYPE = "urn:local-ai-lab:labbuild:release:v1"
BUILDER_ID = "urn:local-ai-lab:labbuild"

_HEX64 = re.compile(r"^[0-9a-f]{64}$")
_GIT_COMMIT = re.compile(r"^[0-9a-f]{40}([0-9a-f]{24})?$")


@dataclass(frozen=True)
class BuildInfo:
    """How a release was built: the facts the provenance records."""

    lab: str
    profile: str
    version: str
    inputs: str                                  # the lock's inputs hash, "sha256:<hex>"
    sources: Mapping[str, str] = field(default_factory=dict)  # lab-relative path -> sha256 (blueprints, lab.toml, …)
    git_commit: str | None = None                # the lab repository's HEAD, when it is a git checkout
    build_epoch: int | None = None               # SOURCE_DATE_EPOCH of the build, when set


def sha256_hex(digest: str, what: str) -> str:
    """``<hex>`` from ``sha256:<hex>`` or ``<hex>``; ``BundleError`` for anything else."""
    hexpart = digest.removeprefix("sha256:")
    if not _HEX64.match(hexpart):
        raise BundleError(f"{what}: {digest!r} is not a sha256 digest")
    return hexpart


def _rfc3339(epoch: int) -> str:
    return _dt.datetime.fromtimestamp(epoch, _dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def provenance_statement(subjects: Mapping[str, str], build: BuildInfo, *, labbuild_version: str) -> dict:
    """The in-toto Statement v1 (SLSA Provenance v1 predicate) of a release.

    ``subjects``: name -> sha256 (``sha256:<hex>`` or bare hex), e.g.
    ``{"manifest.json": ..., "docker.io/qdrant/qdrant:v1.12.4": <index digest>}``.
    """
    if not subjects:
        raise BundleError("provenance needs at least one subject")
    internal: dict = {"lockInputs": build.inputs}
    if build.build_epoch is not None:
        internal["sourceDateEpoch"] = build.build_epoch
    dependencies = [{"name": path, "digest": {"sha256": sha256_hex(d, path)}}
                    for path, d in sorted(build.sources.items())]
    if build.git_commit is not None:
        if not _GIT_COMMIT.match(build.git_commit):
            raise BundleError(f"git commit {build.git_commit!r} is not a full commit id")
        dependencies.append({"name": "lab repository", "digest": {"gitCommit": build.git_commit}})
    run_details: dict = {"builder": {"id": BUILDER_ID, "version": {"labbuild": labbuild_version}}}
    if build.build_epoch is not None:
        when = _rfc3339(build.build_epoch)
        run_details["metadata"] = {"startedOn": when, "finishedOn": when}
    return {
        "_type": STATEMENT_TYPE,
        "subject": [{"name": name, "digest": {"sha256": sha256_hex(d, name)}} for name, d in sorted(subjects.items())],
        "predicateType": PREDICATE_TYPE,
        "predicate": {
            "buildDefinition": {
                "buildType": BUILD_TYPE,
                "externalParameters": {"lab": build.lab, "profile": build.profile, "version": build.version},
                "internalParameters": internal,
                "resolvedDependencies": dependencies,
            },
            "runDetails": run_details,
        },
    }


def render_provenance(statement: dict, private_key: PrivateKey | None = None) -> bytes:
    """The bytes of ``provenance.intoto.json``: the statement in a DSSE envelope, signed when a key is given."""
    payload = canonical_json(statement).encode("utf-8")
    envelope = unsigned_envelope(IN_TOTO_PAYLOAD_TYPE, payload) if private_key is None \
        else sign_envelope(IN_TOTO_PAYLOAD_TYPE, payload, private_key)
    return envelope.render()


@dataclass(frozen=True)
class Provenance:
    """A parsed ``provenance.intoto.json``."""

    statement: dict
    signed: bool               # the envelope carries at least one signature
    signature_checked: bool    # one of them verified with the key given
    keyid: str | None = None   # the keyid of the verified signature

    def subjects(self) -> dict[str, str]:
        """name -> ``sha256:<hex>`` of the statement's subjects."""
        return {s["name"]: "sha256:" + s["digest"]["sha256"] for s in self.statement["subject"]}


def read_provenance(raw: bytes, public_key: PublicKey | None = None) -> Provenance:
    """Parse ``provenance.intoto.json``; with ``public_key``, require a signature by it.

    Raises ``BundleError`` naming the file when it is not a DSSE envelope of an
    in-toto Statement v1 with an SLSA Provenance v1 predicate, when a signature
    entry is not a signature in form (empty, garbled), or when a key is given
    and no signature verifies with it (including: not signed).
    """
    envelope = parse_envelope(raw, PROVENANCE_NAME)
    if envelope.payload_type != IN_TOTO_PAYLOAD_TYPE:
        raise BundleError(f"{PROVENANCE_NAME}: payloadType is {envelope.payload_type!r}, not {IN_TOTO_PAYLOAD_TYPE}")
    for i, signature in enumerate(envelope.signatures):   # a garbled entry never makes it "signed"
        if not raw_signature_form_ok(signature.sig):
            raise BundleError(f"{PROVENANCE_NAME}: signatures[{i}] is not a signature (neither DER ECDSA nor "
                              "a 64-byte Ed25519 one)", hint="the provenance is damaged or was altered")
    checked = None
    if public_key is not None:
        if not envelope.signatures:
            raise BundleError(f"{PROVENANCE_NAME}: provenance is not signed",
                              hint="ask for a bundle made with `labbuild release --sign KEY`")
        checked = verified_signature(envelope, public_key)
        if checked is None:
            raise BundleError(f"{PROVENANCE_NAME}: no signature verifies with this key",
                              hint="the provenance was altered, or signed with another key")
    try:
        statement = json.loads(envelope.payload)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise BundleError(f"{PROVENANCE_NAME}: payload is not JSON ({exc})") from None
    _check_statement(statement)
    return Provenance(statement=statement, signed=bool(envelope.signatures), signature_checked=checked is not None,
                      keyid=checked.keyid if checked else None)


def _check_statement(statement) -> None:
    if not isinstance(statement, dict) or statement.get("_type") != STATEMENT_TYPE:
        raise BundleError(f"{PROVENANCE_NAME}: payload is not an in-toto Statement v1")
    if statement.get("predicateType") != PREDICATE_TYPE:
        raise BundleError(f"{PROVENANCE_NAME}: predicateType is not {PREDICATE_TYPE}")
    subjects = statement.get("subject")
    if not isinstance(subjects, list) or not subjects or not all(
            isinstance(s, dict) and isinstance(s.get("name"), str) and isinstance(s.get("digest"), dict)
            and _HEX64.match(str(s["digest"].get("sha256", ""))) for s in subjects):
        raise BundleError(f"{PROVENANCE_NAME}: subject must be a non-empty list of names with sha256 digests")


def subject_problems(provenance: Provenance, expected: Mapping[str, str]) -> list[str]:
    """How the provenance's subjects differ from ``expected`` (name -> sha256 or ``sha256:<hex>``)."""
    claimed = provenance.subjects()
    want = {name: "sha256:" + sha256_hex(d, name) for name, d in expected.items()}
    problems = [f"subject {n} is not in the bundle" for n in sorted(set(claimed) - set(want))]
    problems += [f"subject {n} is missing" for n in sorted(set(want) - set(claimed))]
    problems += [f"subject {n}: digest {claimed[n]} differs from the bundle's {want[n]}"
                 for n in sorted(set(claimed) & set(want)) if claimed[n] != want[n]]
    return problems
