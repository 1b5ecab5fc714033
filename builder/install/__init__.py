"""The install side: a bundle on a host. Imports nothing of the build side
(blueprint, lock, registry, blob cache, render): it reads bundles through
``builder.bundle.layout``/``reader``/``verify`` only.

``state`` (the install dir), ``secrets`` (DIR/.env), ``engine`` (Docker: image
IDs, containers, streaming load), ``unpack`` (verify while loading),
``compose`` (running compose v2), ``health`` (probes, waiting), ``apply``
(install, upgrade, rollback, uninstall), ``status`` and ``check`` (testinfra).
"""
