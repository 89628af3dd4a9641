"""Batches bound the task runs of a stage without changing which units run or in what order."""
import pytest

from pipeline.batching import BATCHES_PER_WORKER, batch_units
from pipeline.stage import Unit


def _units(sizes: list[int]) -> list[Unit]:
    return [Unit(f"u{i:06d}", size_bytes=size) for i, size in enumerate(sizes)]


@pytest.mark.parametrize(("count", "expected"), [(1, 1), (7, 7), (1000, 2 * BATCHES_PER_WORKER), (220_000, 440)])
def test_every_unit_once_in_order_and_the_count_bounded(count, expected):
    units = _units([10] * count)
    batches = batch_units(units, max_units=500, max_bytes=2**40, workers=2)
    assert [u for b in batches for u in b.units] == units
    assert all(len(b.units) <= 500 for b in batches)
    assert len(batches) == expected
    assert [b.id for b in batches] == sorted(b.id for b in batches) and len({b.id for b in batches}) == len(batches)


def test_bytes_cap_a_batch_and_a_large_unit_stands_alone():
    units = _units([40, 40, 40, 200, 10, 10, 90, 5])
    batches = batch_units(units, max_units=100, max_bytes=100, workers=0)
    assert [[u.id for u in b.units] for b in batches] == [
        ["u000000", "u000001"], ["u000002"], ["u000003"], ["u000004", "u000005"], ["u000006", "u000007"]]


def test_small_stages_spread_over_every_worker():
    batches = batch_units(_units([1] * 40), max_units=500, max_bytes=2**40, workers=4)
    assert [len(b.units) for b in batches] == [3] * 13 + [1]  # ceil(40 / (4 workers x 4)) units each


def test_limits_must_be_positive():
    with pytest.raises(ValueError, match="max_units=0"):
        batch_units(_units([1]), max_units=0, max_bytes=1, workers=1)
