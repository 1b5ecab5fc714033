"""labbuild: reproducible builds of Local AI Lab.

The package is shaped like the pipeline: ``blueprint`` (load, schema,
semantic rules) -> ``lock`` (resolve through ``registry``) -> ``bundle``
(render, archive, verify) -> ``install`` (load, secrets, compose, health),
plus ``scaffold`` for contributors. ``cli`` is the thin shell around them.
"""

__version__ = "0.5.0"
