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
        assert _openblas_threads() == [2]
        assert limit_blas_threads(0, "test") == [("libscipy_openblas", 2, 2)]
        assert _openblas_threads() == [2]
        assert limit_blas_threads(1, "test") == [("libscipy_openblas", 2, 1)]
        assert _openblas_threads() == [1]
