"""Real-parts test helpers: a Docker engine probe, a real registry, OCI images built by hand."""
