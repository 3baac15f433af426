"""The simulation's faults of time and storage: processes whose clocks disagree by up to two
minutes and a disk that fills for a few events (every write refused) keep every invariant,
and a seed with them replays exactly."""

from __future__ import annotations

from pathlib import Path

import pytest
from statesaga.definitions.load import load_definition
from statesaga.verify.simulation import Rates, run_seeds, simulate

ROOT = Path(__file__).resolve().parent.parent
SAGAS = {
    "waits (sleeps and wait timeouts: timers by skewed clocks)": ROOT / "tests/sagas/waits.yaml",
    "chaos (parallel fetches, pivot, retries after it)": ROOT / "tests/sagas/chaos.yaml",
}
#: Every seed skewed, and a full disk in every seed that draws it.
SKEWED = Rates(skewed=1.0)


@pytest.mark.parametrize("path", list(SAGAS.values()), ids=list(SAGAS))
@pytest.mark.slow
def test_skewed_clocks_and_a_full_disk_keep_every_invariant(path: Path) -> None:
    saga = load_definition(path)
    summary = run_seeds(saga, range(200), rates=SKEWED)
    assert summary.ok, summary.failed[0].report()
    traces = [line for seed in range(40) for line in simulate(saga, seed, rates=SKEWED).trace]
    # The faults happen: clocks apart, writes refused, jobs cut off by them.
    assert any(" clocks: " in line for line in traces)
    assert any(" disk full: " in line for line in traces)
    assert any("cut off: simulated store: the disk is full" in line for line in traces)


def test_a_skewed_seed_replays_exactly() -> None:
    saga = load_definition(SAGAS["waits (sleeps and wait timeouts: timers by skewed clocks)"])
    first = simulate(saga, 11, rates=SKEWED)
    assert first.trace == simulate(saga, 11, rates=SKEWED).trace
