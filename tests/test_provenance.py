"""provenance.intoto.json: SLSA Provenance v1 in an in-toto Statement v1 in a DSSE envelope —
parsed by in-toto / in-toto-attestation, verified by in-toto with the .pub, reproducible."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest

from builder.errors import BundleError
from builder.provenance import (BUILD_TYPE, PREDICATE_TYPE, BuildInfo, provenance_statement, read_provenance,
                                render_provenance, subject_problems)
from builder.signing import ED25519, fingerprint, generate_keypair, load_private_key, load_public_key

MANIFEST_SHA = "a" * 64
QDRANT = "sha256:" + "b" * 64
COMMIT = "0123456789abcdef0123456789abcdef01234567"
BUILD = BuildInfo(lab="local-ai-lab", profile="phase1", version="0.2.0", inputs="sha256:" + "c" * 64,
                  sources={"blueprints/lab.toml": "d" * 64, "blueprints/services/qdrant.toml": "sha256:" + "e" * 64},
                  git_commit=COMMIT, build_epoch=1767225600)
SUBJECTS = {"manifest.json": MANIFEST_SHA, "docker.io/qdrant/qdrant:v1.12.4": QDRANT}


@pytest.fixture(scope="module", params=["ecdsa-p256", ED25519])
def keypair(request, tmp_path_factory) -> tuple[Path, Path]:
    tmp = tmp_path_factory.mktemp("keys")
    generate_keypair(tmp / "k.key", tmp / "k.pub", key_type=request.param)
    generate_keypair(tmp / "other.key", tmp / "other.pub", key_type=request.param)
    return tmp / "k.key", tmp / "k.pub"


def statement() -> dict:
    return provenance_statement(SUBJECTS, BUILD, labbuild_version="0.1.0")


def test_the_statement_says_what_was_built_from_what_by_whom():
    s = statement()
    assert s["_type"] == "https://in-toto.io/Statement/v1" and s["predicateType"] == PREDICATE_TYPE
    assert s["subject"] == [{"name": "docker.io/qdrant/qdrant:v1.12.4", "digest": {"sha256": "b" * 64}},
                            {"name": "manifest.json", "digest": {"sha256": MANIFEST_SHA}}]
    definition = s["predicate"]["buildDefinition"]
    assert definition["buildType"] == BUILD_TYPE
    assert definition["externalParameters"] == {"lab": "local-ai-lab", "profile": "phase1", "version": "0.2.0"}
    assert definition["internalParameters"] == {"lockInputs": BUILD.inputs, "sourceDateEpoch": 1767225600}
    assert definition["resolvedDependencies"] == [
        {"name": "blueprints/lab.toml", "digest": {"sha256": "d" * 64}},
        {"name": "blueprints/services/qdrant.toml", "digest": {"sha256": "e" * 64}},
        {"name": "lab repository", "digest": {"gitCommit": COMMIT}}]
    assert s["predicate"]["runDetails"] == {
        "builder": {"id": "urn:local-ai-lab:labbuild", "version": {"labbuild": "0.1.0"}},
        "metadata": {"startedOn": "2026-01-01T00:00:00Z", "finishedOn": "2026-01-01T00:00:00Z"}}


def test_no_git_and_no_epoch_means_no_commit_and_no_time_at_all():
    bare = BuildInfo(lab="l", profile="p", version="1", inputs="sha256:" + "c" * 64)
    s = provenance_statement({"manifest.json": MANIFEST_SHA}, bare, labbuild_version="0.1.0")
    assert s["predicate"]["buildDefinition"]["resolvedDependencies"] == []
    assert "metadata" not in s["predicate"]["runDetails"]
    assert "Z\"" not in json.dumps(s)  # no timestamp anywhere


def test_in_toto_attestation_parses_the_statement_and_the_slsa_v1_predicate_strictly():
    from google.protobuf import json_format
    from in_toto_attestation.predicates.provenance.v1 import provenance_pb2
    from in_toto_attestation.v1 import statement_pb2
    from in_toto_attestation.v1.statement import Statement
    payload = json.loads(base64.b64decode(json.loads(render_provenance(statement()))["payload"]))
    parsed = json_format.ParseDict(payload, statement_pb2.Statement())  # unknown fields would raise
    Statement.copy_from_pb(parsed).validate()
    predicate = json_format.ParseDict(payload["predicate"], provenance_pb2.Provenance())
    assert predicate.build_definition.build_type == BUILD_TYPE
    assert predicate.run_details.builder.version["labbuild"] == "0.1.0"
    assert predicate.run_details.metadata.finished_on.seconds == 1767225600


def test_in_toto_loads_the_envelope_and_verifies_its_signature_with_the_pub(keypair):
    from in_toto.exceptions import SignatureVerificationError
    from in_toto.models.metadata import Envelope, Metadata
    from securesystemslib.signer import SSlibKey
    raw = render_provenance(statement(), load_private_key(keypair[0]))
    envelope = Metadata.from_dict(json.loads(raw))
    assert isinstance(envelope, Envelope)
    pub = load_public_key(keypair[1])
    key = SSlibKey.from_crypto(pub, keyid=fingerprint(pub))
    envelope.verify_signature(key.to_dict() | {"keyid": key.keyid})
    other = load_public_key(keypair[1].with_name("other.pub"))
    wrong = SSlibKey.from_crypto(other, keyid=fingerprint(pub))  # same keyid, other key: must not pass
    with pytest.raises(SignatureVerificationError):
        envelope.verify_signature(wrong.to_dict() | {"keyid": wrong.keyid})


def test_signed_provenance_verifies_and_is_reproducible(keypair):
    key = load_private_key(keypair[0])
    raw = render_provenance(statement(), key)
    assert raw == render_provenance(statement(), key)
    pub = load_public_key(keypair[1])
    prov = read_provenance(raw, pub)
    assert prov.signed and prov.signature_checked and prov.keyid == fingerprint(pub)
    assert prov.subjects() == {"manifest.json": "sha256:" + MANIFEST_SHA, "docker.io/qdrant/qdrant:v1.12.4": QDRANT}
    unchecked = read_provenance(raw)
    assert unchecked.signed and not unchecked.signature_checked
    with pytest.raises(BundleError, match="no signature verifies with this key"):
        read_provenance(raw, load_public_key(keypair[1].with_name("other.pub")))


def test_unsigned_provenance_reads_but_fails_when_a_key_is_required(keypair):
    raw = render_provenance(statement())
    assert json.loads(raw)["signatures"] == [] and not read_provenance(raw).signed
    with pytest.raises(BundleError, match="provenance.intoto.json: provenance is not signed"):
        read_provenance(raw, load_public_key(keypair[1]))


@pytest.mark.parametrize("sig", ["", base64.b64encode(b"not a signature").decode()], ids=["empty", "garbled"])
def test_a_garbled_signature_entry_never_makes_the_provenance_signed(sig):
    doc = json.loads(render_provenance(statement()))
    doc["signatures"] = [{"keyid": "", "sig": sig}]
    with pytest.raises(BundleError, match=r"provenance.intoto.json: signatures\[0\] is not a signature"):
        read_provenance(json.dumps(doc).encode())


def test_tampered_provenance_fails_naming_the_file(keypair):
    raw = render_provenance(statement(), load_private_key(keypair[0]))
    doc = json.loads(raw)
    payload = json.loads(base64.b64decode(doc["payload"]))
    payload["subject"][1]["digest"]["sha256"] = "f" * 64
    doc["payload"] = base64.b64encode(json.dumps(payload).encode()).decode()
    with pytest.raises(BundleError, match="provenance.intoto.json"):
        read_provenance(json.dumps(doc).encode(), load_public_key(keypair[1]))


def test_subject_problems_compare_with_the_bundle():
    prov = read_provenance(render_provenance(statement()))
    assert subject_problems(prov, SUBJECTS) == []
    problems = subject_problems(prov, {"manifest.json": "f" * 64, "docker.io/x:1": QDRANT})
    assert problems == ["subject docker.io/qdrant/qdrant:v1.12.4 is not in the bundle",
                        "subject docker.io/x:1 is missing",
                        f"subject manifest.json: digest sha256:{MANIFEST_SHA} differs from the bundle's sha256:{'f' * 64}"]


@pytest.mark.parametrize("mutate, message", [
    (lambda s: s.update(_type="https://in-toto.io/Statement/v0.1"), "not an in-toto Statement v1"),
    (lambda s: s.update(predicateType="https://slsa.dev/provenance/v0.2"), "predicateType"),
    (lambda s: s.update(subject=[]), "subject must be"),
])
def test_statements_of_another_kind_are_refused(mutate, message):
    s = statement()
    mutate(s)
    with pytest.raises(BundleError, match=message):
        read_provenance(render_provenance(s))


def test_bad_inputs_are_clear_errors():
    with pytest.raises(BundleError, match="not a sha256 digest"):
        provenance_statement({"manifest.json": "md5:abc"}, BUILD, labbuild_version="0.1.0")
    with pytest.raises(BundleError, match="not a full commit id"):
        provenance_statement(SUBJECTS, BuildInfo(lab="l", profile="p", version="1", inputs="x", git_commit="HEAD"),
                             labbuild_version="0.1.0")


def test_a_hostile_payload_is_a_clear_error():
    from builder.dsse import IN_TOTO_PAYLOAD_TYPE, unsigned_envelope
    raw = unsigned_envelope(IN_TOTO_PAYLOAD_TYPE, b"[" * 100_000 + b"]" * 100_000).render()
    with pytest.raises(BundleError, match="payload is not JSON"):
        read_provenance(raw)
