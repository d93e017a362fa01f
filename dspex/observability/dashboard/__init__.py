"""The live job dashboard (``dspex dashboard``): a JSON API and one page, assets in ``static/``."""

from __future__ import annotations

from dspex.observability.dashboard.web import (
    DashboardSource,
    KafkaDashboardSource,
    create_app,
    serve_dashboard,
    start_site,
)

__all__ = ["DashboardSource", "KafkaDashboardSource", "create_app", "serve_dashboard", "start_site"]
