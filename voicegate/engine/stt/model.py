"""The STT's weights (release tensor names) and its stateless decode step.

Parameter names and shapes are those of a Kyutai STT ``model.safetensors``: ``text_emb``,
``emb.{0..n_q-1}``, ``transformer.layers.{i}.{norm1,self_attn,norm2,gating}``, ``out_norm``,
``text_linear`` and, when the release has them, ``extra_heads.{i}``. The arithmetic is the
PersonaPlex LM's (``voicegate.engine.lm._ops`` / ``_fused``, parity-tested against moshi 0.2.13):
the same temporal transformer family with another RoPE period and no depformer.

Owns: SttModel. Imports torch and the lm package's math only.
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Callable
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from voicegate.engine.lm import _fused, _ops
from voicegate.engine.lm._fused import StepKernels
from voicegate.engine.lm.model import DecodeAttention, masked_sdpa
from voicegate.engine.stt.config import SttConfig

__all__ = ["SttModel", "compiled_embed_sum", "embed_sum", "stt_kernels"]

_EAGER = StepKernels.eager()


# The STT's own code objects for ``torch.compile``: the LM's functions with another model's
# shapes would make dynamo recompile them with dynamic shapes (slower LM kernels); these thin
# wrappers give the STT its own compiled graphs, with the LM's fused arithmetic.
def _stt_attention_in(
    x: torch.Tensor,
    alpha: torch.Tensor,
    w_in: torch.Tensor,
    eps: float,
    num_heads: int,
    rotation: torch.Tensor | None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    return _fused.attention_in_real(x, alpha, w_in, eps, num_heads, rotation)


def _stt_layer_out(
    x: torch.Tensor,
    attn: torch.Tensor,
    w_out: torch.Tensor,
    alpha: torch.Tensor,
    w_gate_in: torch.Tensor,
    w_gate_out: torch.Tensor,
    eps: float,
) -> torch.Tensor:
    return _fused.layer_out(x, attn, w_out, alpha, w_gate_in, w_gate_out, eps)


def _stt_final_norm(x: torch.Tensor, alpha: torch.Tensor, eps: float) -> torch.Tensor:
    return _ops.rms_norm(x, alpha, eps)


def stt_kernels(compiled: bool, *, real_rope: bool = False) -> StepKernels:
    """The STT step's kernels: the eager reference (``_ops``, complex RoPE), its own functions
    with real-arithmetic RoPE (``real_rope``: what gets compiled, uncompiled; tests compare the
    two), or those compiled (``compiled``; ``TorchTickModel`` follows the LM's choice)."""
    if not compiled and not real_rope:
        return _EAGER
    fns = StepKernels(
        attention_in=_stt_attention_in,
        layer_out=_stt_layer_out,
        dep_attention_in=_EAGER.dep_attention_in,  # the STT has no depformer
        dep_layer_out=_EAGER.dep_layer_out,
        depformer_input=_EAGER.depformer_input,
        final_norm=_stt_final_norm,
        noise=_EAGER.noise,
        sample=_EAGER.sample,
        real_rope=True,
        is_compiled=False,
    )
    if not compiled:
        return fns
    _fused._configure_dynamo()  # as the LM's: recompile limits, eager fallback
    return dataclasses.replace(
        fns,
        attention_in=_compile(fns.attention_in),
        layer_out=_compile(fns.layer_out),
        final_norm=_compile(fns.final_norm),
        is_compiled=True,
    )


def embed_sum(
    text: torch.Tensor, audio: torch.Tensor, text_table: torch.Tensor, tables: list[torch.Tensor]
) -> torch.Tensor:
    """Input of one position per slot: text [B] and audio [B, n_q] ids -> [B, 1, dim] (the
    codebooks' embeddings summed in order, then the text's)."""
    x = F.embedding(audio[:, 0], tables[0])
    for cb in range(1, len(tables)):
        x = x + F.embedding(audio[:, cb], tables[cb])
    return (x + F.embedding(text, text_table))[:, None]


def compiled_embed_sum() -> Callable[..., torch.Tensor]:
    """``embed_sum`` through ``torch.compile``: the 2 * n_q - 1 gathers and adds of 32
    codebooks fused into few kernels."""
    return _compile(embed_sum)


def _compile(fn: Callable[..., Any]) -> Callable[..., Any]:
    with warnings.catch_warnings():  # inductor's imports warn about torch.jit
        warnings.simplefilter("ignore", DeprecationWarning)
        return torch.compile(fn, fullgraph=False, dynamic=None)


class _Weight(nn.Module):
    def __init__(self, rows: int, cols: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(rows, cols), requires_grad=False)


class _RMSNorm(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.alpha = nn.Parameter(torch.ones(1, 1, dim), requires_grad=False)


class _Gating(nn.Module):
    def __init__(self, dim: int, inner: int) -> None:
        super().__init__()
        self.linear_in = _Weight(2 * inner, dim)
        self.linear_out = _Weight(dim, inner)


class _Attention(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.in_proj_weight = nn.Parameter(torch.empty(3 * dim, dim), requires_grad=False)
        self.out_proj = _Weight(dim, dim)


class _Layer(nn.Module):
    def __init__(self, config: SttConfig) -> None:
        super().__init__()
        self.norm1 = _RMSNorm(config.dim)
        self.self_attn = _Attention(config.dim)
        self.norm2 = _RMSNorm(config.dim)
        self.gating = _Gating(config.dim, config.ffn_inner)


class _Stack(nn.Module):
    def __init__(self, layers: list[_Layer]) -> None:
        super().__init__()
        self.layers = nn.ModuleList(layers)


class SttModel(nn.Module):
    """STT weights plus the batched one-position step; build on meta, load with ``checkpoint``."""

    def __init__(self, config: SttConfig) -> None:
        super().__init__()
        c = config
        self.config = c
        self._emb = [_Weight(c.audio_card + 1, c.dim) for _ in range(c.n_q)]
        self.emb = nn.ModuleList(self._emb)
        self.text_emb = _Weight(c.text_card + 1, c.dim)
        self._layers = [_Layer(c) for _ in range(c.num_layers)]
        self.transformer = _Stack(self._layers)
        self.out_norm = _RMSNorm(c.dim)
        self.text_linear = _Weight(c.text_card, c.dim)
        self._heads = [_Weight(c.extra_head_dim, c.dim) for _ in range(c.extra_heads)]
        self.extra_heads = nn.ModuleList(self._heads)

    @property
    def device(self) -> torch.device:
        return self.text_emb.weight.device

    @property
    def dtype(self) -> torch.dtype:
        return self.text_emb.weight.dtype

    def embed(
        self,
        text: torch.Tensor,
        audio: torch.Tensor,
        fn: Callable[..., torch.Tensor] = embed_sum,
    ) -> torch.Tensor:
        """Input of one position per slot: text [B] and audio [B, n_q] ids -> [B, 1, dim]
        (``fn``: ``embed_sum`` or its compiled form)."""
        return fn(text, audio, self.text_emb.weight, [e.weight for e in self._emb])

    def step(
        self,
        x: torch.Tensor,
        positions: torch.Tensor,
        kv_cache: torch.Tensor,
        write_index: torch.Tensor,
        filled: torch.Tensor,
        key_mask: torch.Tensor,
        kernels: StepKernels | None = None,
        attention: DecodeAttention | None = None,
        kv_scales: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """One position per slot, as ``LMModel.temporal_step``: x [B, 1, dim] -> normed hidden.

        ``kv_cache`` [L, 2, B, H, C + 1, D] gets this step's keys/values at ``write_index`` [B];
        slot b attends its first ``filled[b]`` columns (``key_mask`` [B, 1, 1, kv_len]). With
        ``kv_scales`` [L, 2, B, H, C + 1] the cache is 8-bit: each vector is stored scaled and
        ``attention`` (default ``masked_sdpa``) gets the layer's scales.
        """
        attend = masked_sdpa if attention is None else attention
        k_fns = _EAGER if kernels is None else kernels
        c = self.config
        rows = torch.arange(x.shape[0], device=x.device)
        rotation = _ops.rope_rotation(positions[:, None], c.head_dim, c.max_period)
        if k_fns.real_rope:
            rotation = torch.view_as_real(rotation)
        for i, layer in enumerate(self._layers):
            q, k, v = k_fns.attention_in(
                x, layer.norm1.alpha, layer.self_attn.in_proj_weight, c.norm_eps, c.num_heads,
                rotation,
            )  # fmt: skip
            keys, values = kv_cache[i, 0], kv_cache[i, 1]
            if kv_scales is None:
                keys[rows, :, write_index] = k[:, :, 0].to(keys.dtype)
                values[rows, :, write_index] = v[:, :, 0].to(values.dtype)
                attn = attend(q, keys, values, filled, key_mask)
            else:  # one scale per key/value vector, as the LM's 8-bit cache
                kq, scale = _ops.quantize_vectors(
                    torch.stack((k[:, :, 0], v[:, :, 0]), 1), keys.dtype
                )
                keys[rows, :, write_index] = kq[:, 0]
                values[rows, :, write_index] = kq[:, 1]
                k_scale, v_scale = kv_scales[i, 0], kv_scales[i, 1]
                scale = scale.to(k_scale.dtype)
                k_scale[rows, :, write_index] = scale[:, 0]
                v_scale[rows, :, write_index] = scale[:, 1]
                attn = attend(q, keys, values, filled, key_mask, k_scale=k_scale, v_scale=v_scale)
            gating = layer.gating
            x = k_fns.layer_out(
                x, attn, layer.self_attn.out_proj.weight, layer.norm2.alpha,
                gating.linear_in.weight, gating.linear_out.weight, c.norm_eps,
            )  # fmt: skip
        return k_fns.final_norm(x, self.out_norm.alpha, c.norm_eps)

    def text_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        return F.linear(hidden, self.text_linear.weight)

    def head_probs(self, hidden: torch.Tensor, head: int) -> torch.Tensor:
        """Softmax of extra head ``head`` over its classes: hidden [B, 1, dim] -> [B, 1, 6]."""
        return torch.softmax(F.linear(hidden, self._heads[head].weight).float(), dim=-1)
