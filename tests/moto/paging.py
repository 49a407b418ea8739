"""Page tokens for the ECS list operations that moto 5.2.5 returns in one piece.

A token names the sort key of the last item handed out, not an offset: items written or
deleted between two pages then neither shift nor repeat the items that stay, which is what
callers of a live cluster can expect.
"""

from __future__ import annotations

import base64
import binascii
import json
from typing import Callable, Sequence, TypeVar

from moto.ecs.exceptions import InvalidParameterException

T = TypeVar("T")

#: The page size when the caller gives none, and the largest one it may ask for.
MAX_RESULTS = 100


def page_size(max_results: object) -> int:
    """The page size asked for, checked against ECS's 1-100 range."""
    if max_results is None:
        return MAX_RESULTS
    if isinstance(max_results, bool) or not isinstance(max_results, int):
        raise InvalidParameterException("maxResults must be an integer between 1 and 100.")
    if not 1 <= max_results <= MAX_RESULTS:
        raise InvalidParameterException("maxResults must be between 1 and 100.")
    return max_results


def paginate(
    items: Sequence[T],
    key: Callable[[T], tuple[str, ...]],
    scope: str,
    max_results: object,
    next_token: str | None,
) -> tuple[list[T], str | None]:
    """One page of `items` in `key` order, and the token for the next page (None at the end)."""
    size = page_size(max_results)
    ordered = sorted(items, key=key)
    start = 0
    if next_token:
        after = _decode(next_token, scope)
        start = next((i for i, item in enumerate(ordered) if key(item) > after), len(ordered))
    page = ordered[start : start + size]
    more = start + size < len(ordered)
    return page, (_encode(scope, key(page[-1])) if more and page else None)


def _encode(scope: str, after: tuple[str, ...]) -> str:
    raw = json.dumps({"scope": scope, "after": list(after)}, separators=(",", ":"))
    return base64.urlsafe_b64encode(raw.encode()).decode()


def _decode(token: str, scope: str) -> tuple[str, ...]:
    invalid = InvalidParameterException("The specified nextToken is not valid.")
    try:
        body = json.loads(base64.urlsafe_b64decode(token.encode()))
    except (binascii.Error, ValueError, UnicodeError):
        raise invalid from None
    if not isinstance(body, dict) or body.get("scope") != scope:
        raise invalid
    after = body.get("after")
    if not isinstance(after, list) or not all(isinstance(part, str) for part in after):
        raise invalid
    return tuple(after)
