"""Progress lines for long steps: done / total, elapsed time and ETA.

`progress(items, what, log=...)` yields the items and, every `every` seconds
(10 by default), logs `what: 120/900 (13%), 0:00:21 elapsed, ETA 0:02:17`,
and a last line when the step took longer than one interval. A step that
ends sooner prints nothing. `log` is print on the main process and None on
the others, which stay silent.
"""

import datetime
import time


def _clock(seconds):
    return str(datetime.timedelta(seconds=int(seconds)))


def progress(items, what, *, log=print, total=None, every=10.0):
    """Iterate over `items` (total: their number, if len() cannot tell), logging progress."""
    total = len(items) if total is None else total
    start = last = time.perf_counter()
    printed = False
    done = 0
    for item in items:
        yield item
        done += 1
        now = time.perf_counter()
        if log is not None and now - last >= every and done < total:
            elapsed = now - start
            eta = elapsed / done * (total - done)
            log(
                f"{what}: {done}/{total} ({100 * done / max(total, 1):.0f}%), "
                f"{_clock(elapsed)} elapsed, ETA {_clock(eta)}"
            )
            last, printed = now, True
    if log is not None and printed:
        log(f"{what}: {done}/{total} done in {_clock(time.perf_counter() - start)}")
