"""A Prometheus HTTP API client: instant queries (GET /api/v1/query), nothing more. Standard library:
one GET per query does not earn a dependency."""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request

QUERY_TIMEOUT_S = 5.0


class QueryError(Exception):
    """Prometheus refused the query (its message included) or could not be reached."""


def instant(base_url: str, promql: str, timeout_s: float = QUERY_TIMEOUT_S) -> list[dict]:
    """The result of an instant query: for a vector, [{"metric": {...}, "value": [t, "v"]}, ...];
    for a scalar, one such entry with no labels."""
    q = urllib.parse.urlencode({"query": promql})
    try:
        with urllib.request.urlopen(f"{base_url.rstrip('/')}/api/v1/query?{q}", timeout=timeout_s) as r:
            body = json.loads(r.read())
    except urllib.error.HTTPError as e:  # 400/422 carry Prometheus' own error in JSON
        try:
            body = json.loads(e.read() or b"{}")
        except ValueError:
            raise QueryError(f"{promql!r}: HTTP {e.code} from {base_url}") from e
    except (urllib.error.URLError, OSError, ValueError) as e:
        raise QueryError(f"{promql!r}: {base_url} unreachable: {e}") from e
    if body.get("status") != "success":
        raise QueryError(f"{promql!r}: {body.get('errorType')}: {body.get('error')}")
    data = body["data"]
    if data["resultType"] == "scalar":
        return [{"metric": {}, "value": data["result"]}]
    return data["result"]


def number(base_url: str, promql: str) -> float | None:
    """A query that must yield at most one number: None for no data (or NaN, as 0/0 gives)."""
    result = instant(base_url, promql)
    if len(result) > 1:
        raise QueryError(f"{promql!r} returned {len(result)} series; aggregate it to one (e.g. with sum)")
    if not result:
        return None
    value = float(result[0]["value"][1])
    return None if value != value else value
