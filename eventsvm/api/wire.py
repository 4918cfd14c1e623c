"""How values look on the wire in OpenStack's APIs: timestamps, links, ids, paging and the
request id every event carries."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any, TypeVar
from urllib.parse import urlencode

from fastapi import Request
from fastapi.responses import JSONResponse
from pydantic_core import to_json

from eventsvm.api.auth import context_of
from eventsvm.api.errors import BadRequest

T = TypeVar("T")


class FastJSONResponse(JSONResponse):
    """A JSON answer serialised by pydantic-core's encoder (Rust, ~5x json.dumps on a big list):
    the same JSON (UTF-8, not ASCII-escaped, like JSONResponse), for the long lists."""

    def render(self, content: Any) -> bytes:
        return to_json(content)


def request_id(request: Request) -> str:
    """This request's id (req-<uuid>), the same one its answer carries in x-openstack-request-id."""
    rid: str = request.state.request_id
    return rid


def base_url(request: Request) -> str:
    """scheme://host:port the clients reach this API at, without a trailing slash."""
    return context_of(request).base_url(str(request.base_url))


def iso_z(ms: int | None) -> str | None:
    """Nova/keystone's `2026-11-26T09:29:43Z` form of a millisecond timestamp."""
    if ms is None:
        return None
    # time.gmtime, not datetime: a page of a server list formats three of these a server
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ms // 1000))


def iso_micro(ms: int | None, zulu: bool = False) -> str | None:
    """`2026-11-26T09:29:43.348000` (nova's launched_at, usage times); keystone adds a Z."""
    if ms is None:
        return None
    text = time.strftime("%Y-%m-%dT%H:%M:%S.", time.gmtime(ms // 1000)) + f"{ms % 1000 * 1000:06d}"
    return text + "Z" if zulu else text


def parse_time(text: str) -> int:
    """Epoch ms of an ISO 8601 time; naive times are UTC. ValueError when it is not one."""
    value = text.strip().replace(" ", "T")
    if value.endswith(("Z", "z")):
        value = value[:-1] + "+00:00"
    moment = datetime.fromisoformat(value)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return int(moment.timestamp() * 1000)


def is_uuid(text: str) -> bool:
    """True for a UUID in any of the spellings nova accepts (with or without dashes)."""
    try:
        uuid.UUID(text)
    except (ValueError, AttributeError, TypeError):
        return False
    return True


def links(base: str, path: str) -> list[dict[str, str]]:
    """nova's self and bookmark links of a resource under `base` (a service prefix)."""
    bookmark = base.replace("/v2.1", "")
    return [{"rel": "self", "href": f"{base}/{path}"}, {"rel": "bookmark", "href": f"{bookmark}/{path}"}]


def parse_limit(raw: str | None, max_page: int) -> int:
    """The `limit` query parameter: a non-negative integer, capped at the API's page size."""
    if raw is None or raw == "":
        return max_page
    if not raw.isdigit():
        raise BadRequest("limit param must be an integer")
    return min(int(raw), max_page)


def page(items: Sequence[T], key: Callable[[T], str], limit: int, marker: str | None) -> list[T]:
    """The items after `marker` (an item's key), at most `limit` of them; 400 for an unknown marker."""
    start = 0
    if marker:
        keys = [key(item) for item in items]
        if marker not in keys:
            raise BadRequest(f"marker [{marker}] not found")
        start = keys.index(marker) + 1
    return list(items[start:start + limit])


def next_link(url: str, items: Sequence[dict[str, Any]], limit: int,
              query: dict[str, str]) -> list[dict[str, str]]:
    """nova's `<collection>_links`: a `next` link when a full page came back, else nothing."""
    if not items or len(items) < limit:
        return []
    params = {k: v for k, v in query.items() if k not in ("marker", "limit")}
    params["limit"] = str(limit)
    params["marker"] = str(items[-1]["id"])
    return [{"rel": "next", "href": f"{url}?{urlencode(params)}"}]


# the words oslo's bool_from_string reads as true and as false (any case)
TRUE_WORDS = frozenset({"1", "true", "yes", "on", "y", "t"})
FALSE_WORDS = frozenset({"0", "false", "no", "off", "n", "f"})


def truthy(raw: str | None) -> bool:
    """OpenStack's loose booleans in query strings (1, true, True, yes, on)."""
    return raw is not None and raw.strip().lower() in TRUE_WORDS


def boolean_word(raw: str) -> bool | None:
    """OpenStack's strict booleans (bool_from_string with strict): True or False for one of its
    words, None for anything else (the caller's 400)."""
    word = raw.strip().lower()
    return True if word in TRUE_WORDS else False if word in FALSE_WORDS else None


def wants_detail(request: Request) -> bool:
    """Whether a list was asked for at its `/detail` path (nova's and cinder's lists in full): one
    handler serves both paths of such a list."""
    return request.url.path.rstrip("/").endswith("/detail")
