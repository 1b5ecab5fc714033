"""Exports of the lab to other platforms: ``helm`` (a Helm chart for Kubernetes).

Pipeline: ``source`` (a bundle's text members, from an archive or planned
from a profile) -> ``model`` (``ChartLab``: what the chart needs, resolved
once) -> ``objects`` / ``values`` / ``docs`` (pure renderers) -> ``helm``
(``render_chart`` and ``export_helm``, which writes the files atomically).
"""
