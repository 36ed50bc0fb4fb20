"""Progress lines: done / total, elapsed and ETA every interval, nothing for a quick step."""

from cxr.run.progress import progress


def test_lines_count_the_items_and_end_with_the_total():
    lines = []
    assert list(progress(range(4), "features", log=lines.append, every=0.0)) == [0, 1, 2, 3]
    assert [line.split(",")[0] for line in lines] == [
        "features: 1/4 (25%)",
        "features: 2/4 (50%)",
        "features: 3/4 (75%)",
        "features: 4/4 done in 0:00:00",
    ]
    assert all("ETA" in line for line in lines[:-1])


def test_a_step_quicker_than_the_interval_prints_nothing_and_no_log_prints_nothing():
    lines = []
    assert list(progress([1, 2], "quick", log=lines.append, every=60.0)) == [1, 2]
    assert lines == []
    assert list(progress(iter([5]), "none", log=None, total=1, every=0.0)) == [5]
