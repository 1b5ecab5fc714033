"""``templates/front-door.yaml``: the front door's Secret, made by Helm when the operator brings none.

What ``labbuild install`` makes on a compose host (``install.door``, ``install.access``), made at
the first ``helm install`` with Sprig's functions instead, so the chart installs with no manual step:

- ``ca.crt`` / ``ca.key``: the lab CA (``genPrivateKey "ecdsa"`` is P-256, as install.door's CA;
  ``genCAWithKey``, 10 years).
- ``lab.crt`` / ``lab.key``: the certificate of ``*.<domain>`` and ``<domain>`` signed by that CA
  (``genSignedCertWithKey``, P-256, 825 days, as install.door's leaf). Made again on an upgrade
  when the chart's domain changed or the certificate is within 30 days of its end (the Secret's
  annotations record both), signed by the kept CA (``buildCustomCert``), so browsers that trust
  the CA keep trusting the lab.
- ``oidc-jwks.pem``: the provider's OIDC signing key. Sprig's ``genPrivateKey "rsa"`` is RSA 4096
  (PKCS#1 PEM); install.door makes RSA 2048 (PKCS#8). Both sign RS256, and Authelia reads both PEM
  forms (``ParsePEMBlock`` in internal/utils/crypto.go, v4.39: ``RSA PRIVATE KEY`` through
  ``x509.ParsePKCS1PrivateKey``).
- ``users_database.yml``: the first admin ``admin`` (groups ``[admin]``, as ``host.userdb.
  add_first_admin``) with a generated password kept under ``admin-password``. The digest is
  Sprig's ``bcrypt`` (golang.org/x/crypto/bcrypt, cost 10: ``$2a$10$...``), not argon2id (Sprig
  has none): Authelia's file backend reads bcrypt digests (docs/content/reference/guides/
  passwords.md, "Identification": Bcrypt; its 4.39 user-database schema's PasswordDigest pattern
  allows ``$2a$``/``$2b$``/``$2y$``). Authelia decodes each user's digest with go-crypt's
  ``crypt.NewDefaultDecoder()`` (``DecodePasswordDigest`` in internal/configuration/schema), which
  registers bcrypt whatever ``password.algorithm`` says (that one is for new digests), and
  go-crypt's algorithm/bcrypt/decoder.go registers the ``2a`` identifier as the standard variant.

Each value is read back from the Secret in the cluster (``lookup``) and kept, so an upgrade never
changes a key or the admin's password; ``helm.sh/resource-policy: keep`` keeps it after an
uninstall. ``helm template`` has no cluster: ``lookup`` is empty and fresh values are rendered.
With ``frontDoor.existingSecret`` set, nothing is made and the pods mount that Secret.
"""

from __future__ import annotations

from .model import ChartLab
from .objects import FRONT_DOOR_SECRET, USERS_KEY, labels
from .yamltext import quoted, scalar

ADMIN = "admin"                     # the first admin and its group, as host.userdb.add_first_admin
PASSWORD_KEY = "admin-password"     # the first admin's password, in clear, for the operator to read once
PASSWORD_LENGTH = 24                # random letters and digits (about 143 bits)
CA_DAYS, LEAF_DAYS, RENEW_DAYS = 3650, 825, 30      # as install.door
DOMAIN_NOTE = "labbuild/front-door-domain"
RENEW_NOTE = "labbuild/front-door-renew-after"       # RFC 3339 date: lab.crt is made again after it
USERS_HEADER = ("# The front door's users (Authelia file backend), made by the Helm chart at its first install.\n"
                "# The first admin's password: the key admin-password of this Secret.\n")


def _template_lines(lab: ChartLab) -> tuple[str, ...]:
    """The Go template lines that fill ``$data`` (base64 values) and ``$notes`` before the object."""
    domain = lab.door.domain
    d, wild = quoted(domain), quoted(f"*.{domain}")
    return (
        '{{- if not $.Values.frontDoor.existingSecret }}',
        f'{{{{- $existing := lookup "v1" "Secret" $.Release.Namespace {quoted(FRONT_DOOR_SECRET)} | default dict }}}}',
        '{{- $old := dig "data" dict $existing }}',
        '{{- $oldNotes := dig "metadata" "annotations" dict $existing }}',
        '{{- $data := dict }}',
        # the CA: kept, else made
        '{{- if and (hasKey $old "ca.crt") (hasKey $old "ca.key") }}',
        '{{- $_ := set $data "ca.crt" (index $old "ca.crt") }}',
        '{{- $_ := set $data "ca.key" (index $old "ca.key") }}',
        '{{- else }}',
        f'{{{{- $ca := genCAWithKey "Local AI Lab CA" {CA_DAYS} (genPrivateKey "ecdsa") }}}}',
        '{{- $_ := set $data "ca.crt" ($ca.Cert | b64enc) }}',
        '{{- $_ := set $data "ca.key" ($ca.Key | b64enc) }}',
        '{{- end }}',
        # the wildcard certificate: kept while it is the same CA's, for this domain and not near its end
        '{{- $renewAfter := index $oldNotes ' + quoted(RENEW_NOTE) + ' | default "" }}',
        '{{- $fresh := and $renewAfter (now | date "2006-01-02" | lt $renewAfter | not) }}',
        '{{- $keep := and (hasKey $old "lab.crt") (hasKey $old "lab.key") (hasKey $old "ca.key")'
        f' (eq (index $oldNotes {quoted(DOMAIN_NOTE)} | default "") {d}) $fresh }}}}',
        '{{- if $keep }}',
        '{{- $_ := set $data "lab.crt" (index $old "lab.crt") }}',
        '{{- $_ := set $data "lab.key" (index $old "lab.key") }}',
        '{{- $_ := set $data "renewAfter" $renewAfter }}',
        '{{- else }}',
        '{{- $signer := buildCustomCert (index $data "ca.crt") (index $data "ca.key") }}',
        f'{{{{- $leaf := genSignedCertWithKey {wild} nil (list {wild} {d}) {LEAF_DAYS} $signer (genPrivateKey "ecdsa") }}}}',
        '{{- $_ := set $data "lab.crt" ($leaf.Cert | b64enc) }}',
        '{{- $_ := set $data "lab.key" ($leaf.Key | b64enc) }}',
        f'{{{{- $_ := set $data "renewAfter" (now | dateModify "{(LEAF_DAYS - RENEW_DAYS) * 24}h" | date "2006-01-02") }}}}',
        '{{- end }}',
        # the OIDC signing key
        '{{- if hasKey $old "oidc-jwks.pem" }}',
        '{{- $_ := set $data "oidc-jwks.pem" (index $old "oidc-jwks.pem") }}',
        '{{- else }}',
        '{{- $_ := set $data "oidc-jwks.pem" (genPrivateKey "rsa" | b64enc) }}',
        '{{- end }}',
        # the users file and the first admin's password: kept together, else made together
        f'{{{{- if hasKey $old {quoted(USERS_KEY)} }}}}',
        f'{{{{- $_ := set $data {quoted(USERS_KEY)} (index $old {quoted(USERS_KEY)}) }}}}',
        f'{{{{- with index $old {quoted(PASSWORD_KEY)} }}}}{{{{ $_ := set $data {quoted(PASSWORD_KEY)} . }}}}{{{{ end }}}}',
        '{{- else }}',
        f'{{{{- $password := randAlphaNum {PASSWORD_LENGTH} }}}}',
        f'{{{{- $admin := dict "displayname" {quoted(ADMIN)} "password" (bcrypt $password) "email" ""'
        f' "groups" (list {quoted(ADMIN)}) "disabled" false }}}}',
        f'{{{{- $users := dict "users" (dict {quoted(ADMIN)} $admin) | toYaml | print {quoted(USERS_HEADER)} }}}}',
        f'{{{{- $_ := set $data {quoted(USERS_KEY)} ($users | b64enc) }}}}',
        f'{{{{- $_ := set $data {quoted(PASSWORD_KEY)} ($password | b64enc) }}}}',
        '{{- end }}',
    )


def door_secret_template(lab: ChartLab) -> str:
    """The text of ``templates/front-door.yaml`` (empty when the lab has no front door)."""
    if lab.door is None:
        return ""
    meta = labels(lab, lab.door.provider)
    lines = [
        "---",
        *_template_lines(lab),
        "apiVersion: v1",
        "kind: Secret",
        "metadata:",
        f"  name: {quoted(FRONT_DOOR_SECRET)}",
        "  labels:",
        *[f"    {quoted(k)}: {scalar(v)}" for k, v in meta.items()],
        "  annotations:",
        '    "helm.sh/resource-policy": "keep"',
        f"    {quoted(DOMAIN_NOTE)}: {quoted(lab.door.domain)}",
        f'    {quoted(RENEW_NOTE)}: {{{{ $data.renewAfter | quote }}}}',
        "type: Opaque",
        "data:",
        '{{- range $key, $value := omit $data "renewAfter" }}',
        "  {{ $key | quote }}: {{ $value | quote }}",
        "{{- end }}",
        "{{- end }}",
    ]
    return ("{{- /* generated by labbuild; do not edit. The front door's keys and first admin "
            "(builder/export/frontdoor.py). */}}\n" + "\n".join(lines) + "\n")

