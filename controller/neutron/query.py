"""A Neutron list request's query: attribute filters, `fields=`, `sort_key`/`sort_dir`, and
`limit`/`marker`/`page_reverse` pagination with links, over the rendered resources."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

from controller.neutron.mapping import BadInput

RESERVED = frozenset({"fields", "limit", "marker", "page_reverse", "sort_key", "sort_dir"})
MAX_LIMIT = 1000


@dataclass(frozen=True)
class Query:
    filters: Mapping[str, Sequence[str]]
    fields: Sequence[str]
    sort: Sequence[tuple[str, bool]]  # (key, ascending)
    limit: int  # 0: no limit
    marker: str
    reverse: bool


def parse(args: Mapping[str, Sequence[str]], known: Sequence[str]) -> Query:
    """The query of `args` (werkzeug's MultiDict as lists); `known`: the kind's attributes, by which it may
    be filtered and sorted (Neutron refuses a sort key it does not know; filters on unknown attributes are
    ignored, as Neutron does by default)."""
    filters = {k: list(v) for k, v in args.items() if k not in RESERVED and k in known}
    keys = list(args.get("sort_key", []))
    dirs = list(args.get("sort_dir", []))
    if dirs and len(dirs) != len(keys):
        raise BadInput("sort_dir", "the number of sort_keys and sort_dirs must be the same")
    for k in keys:
        if k not in known:
            raise BadInput("sort_key", f"{k} is an invalid attribute for sort_keys")
    for d in dirs:
        if d not in ("asc", "desc"):
            raise BadInput(
                "sort_dir", f"{d} is an invalid value for sort_dir, valid values are 'asc' and 'desc'"
            )
    sort = [(k, (dirs[i] if dirs else "asc") == "asc") for i, k in enumerate(keys)]
    limit_s = (args.get("limit") or ["0"])[-1]
    try:
        limit = int(limit_s)
    except ValueError:
        raise BadInput("limit", f"'{limit_s}' is not an integer") from None
    if limit < 0:
        raise BadInput("limit", f"'{limit_s}' should be non-negative")
    reverse_s = (args.get("page_reverse") or ["false"])[-1].lower()
    return Query(
        filters=filters,
        fields=[f for v in args.get("fields", []) for f in v.split(",") if f],
        sort=sort,
        limit=min(limit, MAX_LIMIT),
        marker=(args.get("marker") or [""])[-1],
        reverse=reverse_s == "true",
    )


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "True" if value else "False"
    return "" if value is None else str(value)


def _matches(value: Any, wanted: Sequence[str]) -> bool:
    """Neutron's filter semantics: any of the values given; a list attribute matches when one of its items
    does; a list of dicts ("fixed_ips=ip_address=10.0.0.5") when one item has that key and value."""
    for w in wanted:
        if isinstance(value, list):
            if any(isinstance(i, dict) and _dict_matches(i, w) for i in value):
                return True
            if any(not isinstance(i, dict) and _text(i) == w for i in value):
                return True
        elif isinstance(value, bool):
            if w.lower() in ("true", "false") and value == (w.lower() == "true"):
                return True
        elif _text(value) == w:
            return True
    return False


def _dict_matches(item: Mapping[str, Any], wanted: str) -> bool:
    key, sep, value = wanted.partition("=")
    return bool(sep) and _text(item.get(key)) == value


def _sort_value(value: Any) -> tuple[int, Any]:
    if value is None:
        return (0, "")
    if isinstance(value, (bool, int)):
        return (1, int(value))
    return (2, _text(value))


def select(rows: list[dict[str, Any]], q: Query) -> tuple[list[dict[str, Any]], bool, bool]:
    """The rows of the page `q` asks for, in its order, and whether there are rows after it and before it
    (in the direction of travel: links only for pages that exist)."""
    rows = [r for r in rows if all(_matches(r.get(k), v) for k, v in q.filters.items())]
    keys = [*q.sort, ("id", q.sort[-1][1] if q.sort else True)]
    for key, ascending in reversed(keys):
        rows.sort(key=lambda r, k=key: _sort_value(r.get(k)), reverse=not ascending)  # type: ignore[misc]
    if q.reverse:
        rows.reverse()
    start = 0
    if q.marker:
        at = next((i for i, r in enumerate(rows) if r.get("id") == q.marker), None)
        if at is None:
            raise BadInput("marker", f"{q.marker} could not be found")  # Neutron: 404 in some versions
        start = at + 1
    end = start + q.limit if q.limit else len(rows)
    page = rows[start:end]
    more = end < len(rows)
    if q.reverse:
        page.reverse()
    return page, more, start > 0


def links(
    base: str,
    args: Mapping[str, Sequence[str]],
    page: list[dict[str, Any]],
    q: Query,
    more: bool,
    earlier: bool,
) -> list[dict[str, str]]:
    """Neutron's `<collection>_links`, only when paging (a limit or a marker): "next" (marker: the last row
    shown) when rows follow the page in the sort order, "previous" (marker: the first row, page_reverse) when
    rows precede it. `more` and `earlier` are in the direction of travel (page_reverse walks backwards)."""
    if not (q.limit or q.marker) or not page:
        return []
    keep = [(k, v) for k, vs in args.items() if k not in ("marker", "page_reverse") for v in vs]
    after, before = (earlier, more) if q.reverse else (more, earlier)
    out = []
    if after:
        out.append({"rel": "next", "href": f"{base}?{urlencode([*keep, ('marker', page[-1]['id'])])}"})
    if before:
        params = [*keep, ("marker", page[0]["id"]), ("page_reverse", "True")]
        out.append({"rel": "previous", "href": f"{base}?{urlencode(params)}"})
    return out


def project(row: Mapping[str, Any], fields: Sequence[str]) -> dict[str, Any]:
    return {k: v for k, v in row.items() if not fields or k in fields}
