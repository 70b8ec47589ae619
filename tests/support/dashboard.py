"""The chart's Grafana dashboard as tests read it: the queries of each row's panels."""

from __future__ import annotations

import json
from pathlib import Path

DASHBOARD = Path(__file__).resolve().parents[2] / "charts" / "capstan" / "dashboards" / "capstan.json"


def panel_queries(row: str) -> list[tuple[str, str]]:
    """(title, expr) of every panel under the dashboard row named `row`."""
    out, current = [], None
    for p in json.loads(DASHBOARD.read_text())["panels"]:
        if p["type"] == "row":
            current = p["title"]
        elif current == row:
            out += [(p["title"], t["expr"]) for t in p["targets"]]
    return out
