import os

import pytest

from medgen.parallel import process_map, shared_pool


def _pid(_):
    return os.getpid()


def test_process_map_inside_a_shared_pool_reuses_its_workers():
    with shared_pool(2):
        first = set(process_map(_pid, range(40), 2))
        second = set(process_map(_pid, range(40), 2))
        other_count = set(process_map(_pid, range(40), 3))  # another number of workers: a pool of its own
    third = set(process_map(_pid, range(40), 2))  # outside the scope: a new pool
    assert os.getpid() not in first | second | third
    assert len(first | second) <= 2  # two pools would have given up to four processes
    assert not other_count & (first | second) and not third & (first | second)


def test_process_map_runs_in_process_below_its_thresholds():
    with shared_pool(2):
        assert set(process_map(_pid, range(8), 2)) == {os.getpid()}  # fewer than min_items
        assert set(process_map(_pid, range(40), 1)) == {os.getpid()}


def _fail_on_three(x):
    if x == 3:
        raise ValueError("three")
    return x


def test_an_error_in_a_shared_pool_propagates_and_the_pool_closes():
    import medgen.parallel

    with pytest.raises(ValueError, match="three"):
        with shared_pool(2):
            list(process_map(_fail_on_three, range(40), 2))
    assert medgen.parallel._shared == []
