"""``collector_paused``: the garbage collector is off inside and as it was outside."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from plugins.ldap.gcpause import call_paused, collector_paused


@pytest.fixture
def collector_on() -> Iterator[None]:
    was = gc.isenabled()
    gc.enable()
    yield
    if not was:
        gc.disable()


def test_paused_inside_and_running_again_after(collector_on: None) -> None:
    """Inside the block the collector does not run; after it, it runs again."""
    with collector_paused():
        assert not gc.isenabled()
    assert gc.isenabled()


def test_running_again_after_an_error(collector_on: None) -> None:
    """An exception leaving the block does not leave the collector off."""
    with pytest.raises(RuntimeError), collector_paused():
        raise RuntimeError("parse failed")
    assert gc.isenabled()


def test_a_collector_the_application_disabled_stays_disabled(collector_on: None) -> None:
    """The block never turns on a collector that was off when it began."""
    gc.disable()
    with collector_paused():
        assert not gc.isenabled()
    assert not gc.isenabled()
    gc.enable()


def test_call_paused_pauses_around_the_call_only(collector_on: None) -> None:
    """``call_paused`` runs the function with the collector off, then on again, errors included; a
    collector the application disabled stays disabled."""
    assert call_paused(gc.isenabled) is False
    assert gc.isenabled()
    with pytest.raises(ZeroDivisionError):
        call_paused(divmod, 1, 0)
    assert gc.isenabled()
    gc.disable()
    assert call_paused(gc.isenabled) is False
    assert not gc.isenabled()
    gc.enable()
