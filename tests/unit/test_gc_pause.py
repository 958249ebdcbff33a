"""The collector settings of a flow process: paused around bulk work, young collections rarer."""

from __future__ import annotations

import gc

from foundation.gc_pause import collect_less_often, gc_paused


def test_gc_paused_restores_the_previous_state() -> None:
    assert gc.isenabled()
    with gc_paused():
        assert not gc.isenabled()
    assert gc.isenabled()
    gc.disable()
    try:
        with gc_paused():
            assert not gc.isenabled()
        assert not gc.isenabled()  # was off before: stays off
    finally:
        gc.enable()


def test_collect_less_often_raises_only_the_young_threshold() -> None:
    before = gc.get_threshold()
    try:
        collect_less_often()
        young, middle, oldest = gc.get_threshold()
        assert young == 50_000
        assert (middle, oldest) == before[1:]
        # Cycles are still found.
        cycle: list[object] = []
        cycle.append(cycle)
        del cycle
        assert gc.collect() >= 1
    finally:
        gc.set_threshold(*before)
