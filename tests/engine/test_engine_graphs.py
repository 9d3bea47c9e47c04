"""CUDA-graph bucketing (pure parts; capture itself runs on the GPU machine, bench/)."""

from __future__ import annotations

import pytest
import torch

from voicegate.engine.graphs import NO_CUDA_GRAPH_ENV, TickGraphs, graphs_enabled, kv_buckets


def test_buckets_cover_every_attention_length() -> None:
    buckets = kv_buckets(3000, 64)
    assert buckets == [256, 512, 1024, 2048, 3000]
    assert all(b % 64 == 0 for b in buckets[:-1])
    graphs = TickGraphs(lambda kv_len: None, buckets, torch.device("cpu"))
    for kv_len in range(64, 3001, 64):
        bucket = graphs.bucket_for(kv_len)
        assert bucket >= kv_len and bucket in buckets
        smaller = [b for b in buckets if b < bucket]
        assert not smaller or smaller[-1] < kv_len  # the smallest that covers it
    assert kv_buckets(200, 64) == [200]


def test_graphs_are_off_on_cpu_and_by_env(monkeypatch: pytest.MonkeyPatch) -> None:
    assert not graphs_enabled(torch.device("cpu"))
    monkeypatch.setenv(NO_CUDA_GRAPH_ENV, "1")
    assert not graphs_enabled(torch.device("cuda"))
