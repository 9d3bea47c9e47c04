"""Mimi's split residual vector quantizer: 1 semantic codebook + the acoustic ones.

Both halves project the same latent (not a residual of each other) into the codebook space;
each half then quantizes residually. Codebooks are stored as EMA sums and usages (the
checkpoint's layout); the centroids ``embedding_sum / max(usage, 1e-5)`` are derived once by
``refresh()``. Everything here computes in float32 whatever the model's dtype.

Owns: quantize / dequantize. Imports torch only.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from voicegate.engine.mimi.config import MimiConfig

_USAGE_EPSILON = 1e-5


class _Codebook(nn.Module):
    cluster_usage: torch.Tensor
    embedding_sum: torch.Tensor
    embedding: torch.Tensor

    def __init__(self, dim: int, size: int) -> None:
        super().__init__()
        self.register_buffer("_initialized", torch.ones(1))
        self.register_buffer("cluster_usage", torch.ones(size))
        self.register_buffer("embedding_sum", torch.zeros(size, dim))
        self.register_buffer("embedding", torch.zeros(size, dim), persistent=False)

    def refresh(self) -> None:
        usage = self.cluster_usage.float().clamp(min=_USAGE_EPSILON)
        centroids = self.embedding_sum.float() / usage[:, None]
        self.register_buffer("embedding", centroids, persistent=False)


class _VQLayer(nn.Module):
    def __init__(self, dim: int, size: int) -> None:
        super().__init__()
        self._codebook = _Codebook(dim, size)


class _VQ(nn.Module):
    def __init__(self, dim: int, size: int, n: int) -> None:
        super().__init__()
        self.layers = nn.ModuleList(_VQLayer(dim, size) for _ in range(n))


class _ResidualVQ(nn.Module):
    def __init__(self, latent_dim: int, codebook_dim: int, size: int, n: int) -> None:
        super().__init__()
        self.input_proj = nn.Conv1d(latent_dim, codebook_dim, 1, bias=False)
        self.output_proj = nn.Conv1d(codebook_dim, latent_dim, 1, bias=False)
        self.vq = _VQ(codebook_dim, size, n)

    def _codebooks(self, n: int) -> list[_Codebook]:
        out = []
        for layer in self.vq.layers[:n]:
            assert isinstance(layer, _VQLayer)
            out.append(layer._codebook)
        return out

    def encode(self, latent: torch.Tensor, n: int) -> torch.Tensor:
        """latent [B, C, T] float32 -> codes [B, n, T] long."""
        residual = F.conv1d(latent, self.input_proj.weight).transpose(1, 2)  # [B, T, D]
        b, t, d = residual.shape
        residual = residual.reshape(b * t, d)
        codes = []
        for codebook in self._codebooks(n):
            index = torch.cdist(residual[None], codebook.embedding[None], p=2)[0].argmin(dim=-1)
            residual = residual - F.embedding(index, codebook.embedding)
            codes.append(index.view(b, t))
        return torch.stack(codes, dim=1)

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """codes [B, n, T] -> latent [B, C, T] float32."""
        quantized: torch.Tensor | None = None
        for i, codebook in enumerate(self._codebooks(codes.shape[1])):
            vectors = F.embedding(codes[:, i], codebook.embedding)  # [B, T, D]
            quantized = vectors if quantized is None else quantized + vectors
        assert quantized is not None
        return F.conv1d(quantized.transpose(1, 2), self.output_proj.weight)


class SplitResidualVQ(nn.Module):
    """``rvq_first`` holds the semantic codebook(s), ``rvq_rest`` the acoustic ones."""

    def __init__(self, config: MimiConfig) -> None:
        super().__init__()
        c = config
        self.n_q_semantic = c.n_q_semantic
        self.rvq_first = _ResidualVQ(c.dimension, c.codebook_dim, c.codebook_size, c.n_q_semantic)
        self.rvq_rest = _ResidualVQ(
            c.dimension, c.codebook_dim, c.codebook_size, c.n_q - c.n_q_semantic
        )

    def refresh(self) -> None:
        for m in self.modules():
            if isinstance(m, _Codebook):
                m.refresh()

    def encode(self, latent: torch.Tensor, n_q: int) -> torch.Tensor:
        """latent [B, C, T] -> codes [B, n_q, T] long (computed in float32)."""
        latent = latent.float()
        first = self.rvq_first.encode(latent, self.n_q_semantic)
        rest = self.rvq_rest.encode(latent, n_q - self.n_q_semantic)
        return torch.cat([first, rest], dim=1)

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """codes [B, n_q, T] -> latent [B, C, T] float32."""
        s = self.n_q_semantic
        return self.rvq_first.decode(codes[:, :s]) + self.rvq_rest.decode(codes[:, s:])
