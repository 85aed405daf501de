"""The Settler: the collector is off while units of work run, their survivors leave its sight,
and cyclic garbage among them is reclaimed by the full collection at most `full_every` seconds
later."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator

import pytest

from servicekit.memory import Settler


class _Node:
    def __init__(self) -> None:
        self.me = self  # a cycle: only the collector frees it


@pytest.fixture(autouse=True)
def _thawed() -> Iterator[None]:
    yield
    gc.unfreeze()


def test_survivors_are_frozen_and_cycles_wait_for_the_full_collection() -> None:
    now = [0.0]
    settler = Settler(lambda: now[0], full_every=300.0)
    node = _Node()
    gone = weakref.ref(node)
    settler.settle()
    assert gc.get_freeze_count() > 0
    del node
    gc.collect()  # an ordinary collection skips frozen objects
    assert gone() is not None
    now[0] = 299.0
    settler.settle()
    assert gone() is not None and settler.full_collections == 0
    now[0] = 300.0
    settler.settle()
    assert gone() is None and settler.full_collections == 1


def test_garbage_without_cycles_is_freed_at_once_even_when_frozen() -> None:
    settler = Settler(lambda: 0.0)
    box = _Plain()
    gone_box = weakref.ref(box)
    settler.settle()
    del box
    assert gone_box() is None  # reference counting still frees it


class _Plain:
    pass


def test_the_collector_is_off_while_units_run_and_back_on_after_the_last() -> None:
    settler = Settler(lambda: 0.0)
    assert gc.isenabled()
    with settler.unit():
        assert not gc.isenabled()
        with settler.unit():  # another thread's unit, overlapping
            assert not gc.isenabled()
        assert not gc.isenabled()  # one unit still runs
        survivor = _Plain()
    assert gc.isenabled()
    assert gc.get_freeze_count() > 0 and survivor is not None  # settled: survivors frozen


def test_a_failing_unit_turns_the_collector_back_on() -> None:
    settler = Settler(lambda: 0.0)
    with pytest.raises(RuntimeError), settler.unit():
        raise RuntimeError("the batch was refused")
    assert gc.isenabled()
