"""VOICEGATE_BLAS_THREADS: numpy's OpenBLAS held to a few threads in a serving process."""

from __future__ import annotations

import numpy as np
from threadpoolctl import threadpool_info, threadpool_limits

from voicegate.blas import limit_blas_threads


def _openblas_threads() -> list[int]:
    return [i["num_threads"] for i in threadpool_info() if i["internal_api"] == "openblas"]


def test_openblas_is_held_to_the_threads_asked_and_0_leaves_it() -> None:
    assert np.dot(np.ones(3), np.ones(3)) == 3.0  # numpy (and its OpenBLAS) loaded
    with threadpool_limits(limits=2, user_api="blas"):  # restores the originals after
        assert set(_openblas_threads()) == {2}  # numpy's, and scipy's when it is loaded
        left = limit_blas_threads(0, "test")
        assert left and all((was, now) == (2, 2) for _, was, now in left)
        assert set(_openblas_threads()) == {2}
        held = limit_blas_threads(1, "test")
        assert len(held) == len(left) and all((was, now) == (2, 1) for _, was, now in held)
        assert set(_openblas_threads()) == {1}
