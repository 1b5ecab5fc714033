"""The bundle format, format 1 — the ground floor: every file name, the ``manifest.json`` model and
its one reader and writer, the ``SHA256SUMS`` format, the reader of
``secrets.env.example``, release records, and the version grammar.

Every side meets here and only here: render, the build side of ``bundle`` (``pack``,
``release``, ``fetch``) and export write what this package names; the read side
(``reader``, ``verify``, ``diff``) and the install side (``install``, ``backups``,
``operate``) read it through this package. Nothing here imports anything above the
ground floor (``errors``, ``fsutil``, ``names``, ``limits``, ``platforms``, ``typecheck``).
A format change is an edit to this package:

``files``            every arcname, the top directory and file names, versions, safe relative paths
``manifest``         the ``Manifest`` model: its one reader (``loads``/``from_json``) and writer (``dumps``)
``grammar``          the full-match grammar of every name in a manifest, checked when it is read
``sums``             ``SHA256SUMS``: render and parse
``secrets_example``  ``secrets.env.example``: ``ExampleSecret`` and its one reader
``delta``            a delta bundle's carried/relied summary
``models``           the model formats table (Ollama's layout) and the model blobs a bundle ships
``record``           release records: the typed ``Record``, its one reader and writer
``tar``              the one tar-header writer (bundles, backups, model placement, the load stream)

A bundle is one archive holding one top directory ``<lab>-<profile>-<version>/``::

    compose.yaml  lab.env  secrets.env.example  lock.json  install.sh
    manifest.json       this model (canonical JSON)
    SHA256SUMS          ``sha256sum -c`` format, every file but itself and the signature
    manifest.json.sig   with ``release --sign``: base64 DER ECDSA-P256/SHA-256 over manifest.json
    manifest.json.sigstore.json   the same signature as a Sigstore bundle v0.3
    provenance.intoto.json        DSSE envelope of an SLSA Provenance v1 statement (signed with --sign)
    sbom/<service>_<os>_<arch>.cdx.json   image bundles: CycloneDX 1.6 per image and platform
    runbooks/<service>.md, runbooks/README.md, observability/...
    images/             with ``--with-images``: OCI layout + docker-load manifests

manifest.json: ``{"format": 1, "lab", "name" (top dir), "version", "profile",
"inputs", "labbuild", "offline", "platforms", "services": {name: {"image",
"digest", "verified", "config_digests", "ports", "health", "healthcheck",
"depends_on", "volumes", "secrets", "runbook"[, "memory", "gpus", "optional", "supplied"]}},
"files": {arcname: {"sha256", "size"}}}``; ``files`` lists every file but manifest.json,
SHA256SUMS and the signature. Optional fields appear only when set: ``memory`` and ``gpus``
(``[resources]``; GPUs are reserved only with ``install --gpu``), ``optional`` (true: started
only once its supplied secrets exist, never fails an install) and ``supplied`` (``[{"key",
"description"}]``: operator-supplied secrets, never generated, not in ``secrets``).
A delta bundle (``release --since``) adds ``"since"`` (``DeltaBase``: the base
release and the blobs and base images it relies on); its ``images/blobs/``
holds only what the base lacks.

``models`` (optional, only for services with ``[[models]]``): ``[{"name", "tag",
"digest", "format", "volume", "path", "role", "media_type", "size", "blobs":
[{"digest", "size", "media_type"}]}]`` — the model's manifest is the blob
``digest`` (``size`` bytes) and ``blobs`` are its config and layers. In an image
bundle every one of them is a member ``images/blobs/sha256/<hex>``, in the
same OCI layout as the images (each blob once); a bundle without images
only names them. ``model_bytes`` is what placing them writes.
The backup fields appear only when not
their default: ``backup`` (``{"method", "dump", "restore"}``), ``migrations`` ("one-way") and
``data_in`` (the services holding the data a one-way service migrates). ``wired_to`` (when
not empty): the services of the bundle whose ``[when.X]`` blocks are active for this one — the
connections its configuration implies even where its environment names no address (Weaviate's
Ollama modules are pointed at Ollama per collection); the chart's NetworkPolicy opens them. A block
that holds only ``[[when.X.provision]]`` calls (LiteLLM registering X's key) implies none.
``rotation`` (only for services with a decided secret): ``{KEY: {"rotate"[, "reason", "days",
"holder"]}}`` per .env key of the service's own secrets — whether ``labbuild secrets rotate``/``set``
may change it, why not, after how many days it is due, and the argv run first in the service's
container (``ManifestRotation``); an undecided secret is not listed, and rotate refuses it.
``provision`` (only for services with ``[[provision]]`` or an active ``[[when.X.provision]]``):
``[{"description", "method", "host_port", "path", "body", "keys", "status", "already_status",
"already_text"[, "container_port"][, "bearer"]}]`` (``host_port``
null: a port the front door does not publish, reached at the container's address) — the HTTP calls install makes
once the service is healthy (``ManifestProvision``); ``body`` is JSON text whose strings hold
``${KEY}`` for the DIR/.env keys listed in ``keys``, never a value; ``bearer`` (when present) is
one of those keys, sent as ``Authorization: Bearer`` (``method`` GET: a check, no body). ``show`` (when not empty): the
.env keys of sign-in passwords that install prints once, when it generates them.
"""
