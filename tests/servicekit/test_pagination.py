"""Page-size coercion and page-token validation shared by every List RPC."""

from __future__ import annotations

import pytest

from servicekit.errors import InvalidArgument
from servicekit.pagination import DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE, page


@pytest.mark.parametrize(
    ("requested", "expected"),
    [(0, DEFAULT_PAGE_SIZE), (7, 7), (MAX_PAGE_SIZE, MAX_PAGE_SIZE), (10**6, MAX_PAGE_SIZE)],
    ids=["default", "small", "max", "coerced"],
)
def test_page_size_is_coerced(requested: int, expected: int) -> None:
    assert page(requested, "", "filter").size == expected


def test_negative_page_size_is_rejected() -> None:
    with pytest.raises(InvalidArgument, match="page_size"):
        page(-1, "")


def test_token_round_trip_advances_offset() -> None:
    first = page(10, "", "ns=a")
    token = first.next_token(returned=10, has_more=True)
    assert page(10, token, "ns=a").offset == 10
    assert first.next_token(returned=3, has_more=False) == ""


@pytest.mark.parametrize("token", ["garbage", "e30=", "eyJvIjogLTEsICJmIjogIngifQ=="])
def test_foreign_tokens_are_rejected(token: str) -> None:
    with pytest.raises(InvalidArgument, match="page_token"):
        page(10, token, "ns=a")


def test_token_bound_to_its_filter() -> None:
    token = page(10, "", "ns=a").next_token(returned=10, has_more=True)
    with pytest.raises(InvalidArgument, match="does not belong"):
        page(10, token, "ns=b")
