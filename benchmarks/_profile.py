"""One case under a profiler (``python -m benchmarks --profile CASE``).

pyinstrument (in the ``bench`` extra) samples the call stack every millisecond and prints
a call tree of where the time went, rxflow's frames and the baselines' side by side, so
the tree shows which part of a case is rxflow's. It also writes the tree as an HTML page
to open in a browser. Without pyinstrument, cProfile (standard library) stands in: the
functions with the most cumulative time, and a ``.pstats`` file for ``python -m pstats``
or snakeviz.

A case that runs its measurement in a child process (the memory cases) shows here only
the wait for that child.
"""

from __future__ import annotations

import cProfile
import io
import pstats
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, Literal

Profiler = Literal["pyinstrument", "cprofile"]

# cProfile's listing: this many functions, by cumulative time.
CPROFILE_LINES = 40


def available() -> Profiler:
    """pyinstrument when it is installed, else cProfile."""
    try:
        import pyinstrument  # noqa: F401
    except ImportError:
        return "cprofile"
    return "pyinstrument"


def profile(
    name: str,
    case: Callable[[bool], Iterable[dict[str, Any]]],
    *,
    quick: bool,
    out_dir: Path,
    profiler: Profiler | None = None,
    on_row: Callable[[dict[str, Any]], None] = lambda row: None,
) -> tuple[str, Path]:
    """Run ``case`` once under the profiler; the readable profile and the file written.

    The file is ``out_dir/<name>[-quick].html`` (pyinstrument) or ``.pstats`` (cProfile),
    replaced by the next profile of the same case and size. ``on_row`` gets each row the
    case yields, as it comes.
    """
    chosen = profiler or available()
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = f"{name}-quick" if quick else name

    def run() -> None:
        for row in case(quick):
            on_row(row)

    if chosen == "pyinstrument":
        from pyinstrument import Profiler as Sampler

        # async_mode="disabled": the profiler starts outside any event loop and the case
        # starts its own loops; every frame on the main thread counts, the loop's included.
        sampler = Sampler(async_mode="disabled")
        sampler.start()
        try:
            run()
        finally:
            sampler.stop()
        path = out_dir / f"{stem}.html"
        sampler.write_html(path)
        return sampler.output_text(unicode=True, color=False), path
    tracer = cProfile.Profile()
    tracer.enable()
    try:
        run()
    finally:
        tracer.disable()
    path = out_dir / f"{stem}.pstats"
    tracer.dump_stats(path)
    text = io.StringIO()
    stats = pstats.Stats(tracer, stream=text)
    stats.sort_stats(pstats.SortKey.CUMULATIVE).print_stats(CPROFILE_LINES)
    return text.getvalue(), path
