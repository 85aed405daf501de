"""AIP-158 pagination shared by every List RPC: page-size coercion and opaque page tokens that
carry an offset bound to the request's filter, so a token cannot be replayed on another query."""

from __future__ import annotations

import base64
import hashlib
import json
from dataclasses import dataclass

from servicekit.errors import InvalidArgument

DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 1000


@dataclass(frozen=True)
class Page:
    """One page request: how many items to return and where to start."""

    size: int
    offset: int
    filter_digest: str

    def next_token(self, returned: int, has_more: bool) -> str:
        """Return the token for the page after this one, or "" when this was the last."""
        if not has_more:
            return ""
        payload = json.dumps({"o": self.offset + returned, "f": self.filter_digest})
        return base64.urlsafe_b64encode(payload.encode()).decode()


def digest(*filters: object) -> str:
    """Fingerprint the filter fields of a List request."""
    return hashlib.sha256(repr(filters).encode()).hexdigest()[:16]


def page(page_size: int, page_token: str, *filters: object) -> Page:
    """Validate `page_size` and `page_token` of a List request against its filters."""
    if page_size < 0:
        raise InvalidArgument(f"page_size must not be negative, got {page_size}")
    size = min(page_size or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)
    fingerprint = digest(*filters)
    if not page_token:
        return Page(size, 0, fingerprint)
    try:
        data = json.loads(base64.urlsafe_b64decode(page_token.encode()))
        offset = int(data["o"])
        token_filter = str(data["f"])
    except (ValueError, KeyError, TypeError) as exc:
        raise InvalidArgument("page_token is not a token this service issued") from exc
    if offset < 0 or token_filter != fingerprint:
        raise InvalidArgument("page_token does not belong to this query; start again without it")
    return Page(size, offset, fingerprint)
