"""numpy's BLAS held to a few threads in a serving process (``VOICEGATE_BLAS_THREADS``).

numpy's OpenBLAS keeps one thread per core and may split a product over them; the caller
then waits until every one of those threads has run its part. On a host whose cores are
shared by several event loops, the engine process and the callers, a thread the scheduler
has set aside turns a 30 us product on the event loop into a stall of tens of ms. Measured on
the H200 host (16 cores, 4 edge workers, 158 Twilio calls, ``VOICEGATE_STALL_TRACE_MS=25``):
of the event-loop stalls over 25 ms, nearly every sampled stack had the loop inside the
resampler's ``np.dot`` (voicegate/audio/resample.py), which is a few percent of the loop's
work. The edge's products are small (one call's 80 ms at a time): one thread loses nothing.

Only OpenBLAS is limited: torch's own BLAS and OpenMP threads (the engine's CPU work) are
left as torch sets them. Uses threadpoolctl (what scikit-learn uses for the same purpose).

Owns: limit_blas_threads.
"""

from __future__ import annotations

import logging

log = logging.getLogger("voicegate")

__all__ = ["limit_blas_threads"]


def limit_blas_threads(threads: int, process: str) -> list[tuple[str, int, int]]:
    """Hold every loaded OpenBLAS to ``threads`` (0: leave it as it is); logs what it did.

    Returns (library, threads before, threads now) for each OpenBLAS loaded in this process.
    Call it after numpy is imported (a library loaded later is not limited).
    """
    from threadpoolctl import threadpool_info, threadpool_limits

    before = [i for i in threadpool_info() if i["internal_api"] == "openblas"]
    if threads > 0 and before:
        threadpool_limits(limits={i["prefix"]: threads for i in before})  # keys: prefixes
    after = {i["filepath"]: i["num_threads"] for i in threadpool_info()}
    done = [(i["prefix"], int(i["num_threads"]), int(after[i["filepath"]])) for i in before]
    for prefix, was, now in done:
        log.info("%s: numpy's BLAS (%s) held to %d threads (was %d)", process, prefix, now, was)
    return done
