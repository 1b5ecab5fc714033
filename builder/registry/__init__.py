"""A small, sync, thread-safe client for the OCI Distribution API v2.

This is the only package of labbuild that talks to registries. ``builder.lock``
resolves pins through it; ``builder.outdated`` lists tags through it
(``list_tags``, following ``Link`` pages); the bundle stage downloads image
blobs through it for air-gapped bundles. One ``RegistryClient`` is shared by the threads of a
``ThreadPoolExecutor``::

    with RegistryClient(insecure_registries=lab.insecure_registries) as client:
        manifest = client.fetch_manifest("docker.io/qdrant/qdrant", "sha256:...")
        config = client.fetch_blob("docker.io/qdrant/qdrant", config_digest)
        with client.open_blob("docker.io/qdrant/qdrant", layer_digest, offset=done) as blob:
            if not blob.range_honoured:
                ...  # the body starts at byte 0: reset the hasher and the file
            for chunk in blob:
                ...  # the caller hashes and writes

Trust nothing: every manifest and small blob is hashed and must equal the
digest it was asked for (a mismatch raises at once and is never retried into
acceptance); ``open_blob`` leaves hashing to the caller, who streams.

Transport policy: plain HTTP only for loopback registries (127.0.0.0/8,
``localhost``, ``[::1]``, as Docker allows) and the ``insecure_registries``
given; HTTPS otherwise. Bounded timeouts; retries with exponential backoff
and jitter on 429/5xx, connection errors and timeouts, honouring
``Retry-After``; every call has an overall deadline, and a registry that
stays unreachable is remembered as dead so later calls fail at once (a dead
registry fails a whole ``lock`` within 60 s). At most
``per_registry_concurrency`` requests run against one registry at a time.

Authentication: credentials come from ``$DOCKER_CONFIG/config.json`` or
``~/.docker/config.json`` (``auths`` entries with a base64 ``auth`` or
``username``/``password``; credential helpers are not consulted). Basic auth
and the Bearer token flow (``WWW-Authenticate: Bearer realm,service,scope``;
anonymous, or with the credentials) are supported; tokens are cached per
scope until they expire.

Every failure is a ``RegistryError`` carrying ``registry``, ``image``,
``digest`` (or ``None``) and ``status`` (HTTP status or ``None``) attributes
and a hint.

Modules: ``names`` (image names, HTTP or HTTPS), ``auth`` (credentials,
challenges, tokens), ``manifests`` (media types, ``ImageManifest``),
``responses`` (errors, retry and range headers, blob streams), ``client``
(``RegistryClient``).
"""

from __future__ import annotations

from .auth import Credentials, docker_config_path, load_credentials
from .client import RegistryClient
from .manifests import (
                        ACCEPT_MANIFESTS,
                        DOCKER_LIST,
                        DOCKER_MANIFEST,
                        INDEX_TYPES,
                        MANIFEST_TYPES,
                        OCI_INDEX,
                        OCI_MANIFEST,
                        ImageManifest,
)
from .names import DOCKER_HUB, ImageName, is_loopback, parse_image_name, registry_scheme
from .responses import BlobStream

__all__ = [
    "ACCEPT_MANIFESTS", "DOCKER_HUB", "DOCKER_LIST", "DOCKER_MANIFEST", "INDEX_TYPES",
    "MANIFEST_TYPES", "OCI_INDEX", "OCI_MANIFEST", "BlobStream", "ImageManifest", "ImageName",
    "Credentials", "RegistryClient", "docker_config_path", "is_loopback", "load_credentials", "parse_image_name",
    "registry_scheme",
]
