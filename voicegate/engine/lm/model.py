"""The LM's weights and its forward primitives: embeddings, temporal transformer, depformer.

Parameter names and shapes are the checkpoint's (``model.safetensors``), with the depformer
cut to ``config.dep_q`` steps. Holds no streaming state: KV caches and token caches are passed
in (``voicegate.engine.lm.state``), so one model serves any number of slots.

Owns: ``LMModel``. Imports torch and the lm config/ops only.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn
from torch.nn import functional as F

from voicegate.engine.lm import _ops
from voicegate.engine.lm._fused import StepKernels
from voicegate.engine.lm.config import LMConfig

_EAGER = StepKernels.eager()

__all__ = ["DecodeAttention", "LMModel", "masked_sdpa"]

# (q [B, H, 1, D], keys [B, H, C', D], values, filled [B], key_mask [B, 1, 1, kv_len]) -> [B, H, 1, D]
# With an 8-bit cache it is also given ``k_scale=``/``v_scale=`` [B, H, C'] (keyword arguments).
DecodeAttention = Callable[..., torch.Tensor]


def masked_sdpa(
    q: torch.Tensor,
    keys: torch.Tensor,
    values: torch.Tensor,
    filled: torch.Tensor,
    key_mask: torch.Tensor,
    *,
    k_scale: torch.Tensor | None = None,
    v_scale: torch.Tensor | None = None,
) -> torch.Tensor:
    """Decode attention over the first kv_len key columns with a boolean mask (the default).

    A custom kernel (per-slot lengths, an 8-bit cache) replaces it through ``LM.attention``;
    it must give slot b the softmax over its first ``filled[b]`` columns. With scales (an
    8-bit cache) column p of head h is ``keys[b, h, p] * k_scale[b, h, p]``.
    """
    kv_len = key_mask.shape[-1]
    k, v = keys[:, :, :kv_len], values[:, :, :kv_len]
    if k_scale is not None and v_scale is not None:
        k = _ops.dequantize_vectors(k, k_scale[:, :, :kv_len], q.dtype)
        v = _ops.dequantize_vectors(v, v_scale[:, :, :kv_len], q.dtype)
    return F.scaled_dot_product_attention(q, k.to(q.dtype), v.to(q.dtype), attn_mask=key_mask)


class _Weight(nn.Module):
    """A bare ``weight`` parameter (a linear map, or a stack of per-step ones)."""

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
    """``in_proj_weight`` [steps * 3 * dim, dim] and ``out_proj.weight`` [steps * dim, dim]."""

    def __init__(self, dim: int, steps: int) -> None:
        super().__init__()
        self.in_proj_weight = nn.Parameter(torch.empty(steps * 3 * dim, dim), requires_grad=False)
        self.out_proj = _Weight(steps * dim, dim)


class _TemporalLayer(nn.Module):
    def __init__(self, config: LMConfig) -> None:
        super().__init__()
        self.norm1 = _RMSNorm(config.dim)
        self.self_attn = _Attention(config.dim, 1)
        self.norm2 = _RMSNorm(config.dim)
        self.gating = _Gating(config.dim, config.ffn_inner)


class _DepformerLayer(nn.Module):
    def __init__(self, config: LMConfig, steps: int) -> None:
        super().__init__()
        self.norm1 = _RMSNorm(config.dep_dim)
        self.self_attn = _Attention(config.dep_dim, steps)
        self.norm2 = _RMSNorm(config.dep_dim)
        gates = [_Gating(config.dep_dim, config.dep_ffn_inner) for _ in range(steps)]
        self.gating = nn.ModuleList(gates)
        self.gates: list[_Gating] = gates  # typed view of ``gating``


class _Stack(nn.Module):
    def __init__(self, layers: list[_TemporalLayer] | list[_DepformerLayer]) -> None:
        super().__init__()
        self.layers = nn.ModuleList(layers)


class LMModel(nn.Module):
    """PersonaPlex LM weights (checkpoint names) plus stateless forward primitives.

    Build on the meta device and load with ``voicegate.engine.lm.checkpoint``; never trained.
    """

    def __init__(self, config: LMConfig, dep_steps: int | None = None) -> None:
        super().__init__()
        c = config
        steps = c.dep_q if dep_steps is None else dep_steps
        self.config = c
        self.dep_steps = steps
        self._emb = [_Weight(c.audio_card + 1, c.dim) for _ in range(c.n_q)]
        self.emb = nn.ModuleList(self._emb)
        self.text_emb = _Weight(c.text_card + 1, c.dim)
        self.text_linear = _Weight(c.text_card, c.dim)
        self._temporal = [_TemporalLayer(c) for _ in range(c.num_layers)]
        self.transformer = _Stack(self._temporal)
        self.out_norm = _RMSNorm(c.dim)
        self._depformer_in = [_Weight(c.dep_dim, c.dim) for _ in range(steps)]
        self.depformer_in = nn.ModuleList(self._depformer_in)
        self._depformer_emb = [_Weight(c.audio_card + 1, c.dep_dim) for _ in range(steps - 1)]
        self.depformer_emb = nn.ModuleList(self._depformer_emb)
        self.depformer_text_emb = _Weight(c.text_card + 1, c.dep_dim)
        self._dep_layers = [_DepformerLayer(c, steps) for _ in range(c.dep_num_layers)]
        self.depformer = _Stack(self._dep_layers)
        self._linears = [_Weight(c.audio_card, c.dep_dim) for _ in range(steps)]
        self.linears = nn.ModuleList(self._linears)

    @property
    def device(self) -> torch.device:
        return self.text_emb.weight.device

    @property
    def dtype(self) -> torch.dtype:
        return self.text_emb.weight.dtype

    # -- temporal transformer -------------------------------------------------------------

    def embed_tokens(self, tokens: torch.Tensor, has_absent: bool = True) -> torch.Tensor:
        """Input embedding of delayed tokens [B, 17, T] -> [B, T, dim] (audio rows, then text).

        Token -1 embeds to zero unless ``has_absent`` is False (no -1 present).
        """
        x: torch.Tensor | None = None
        for cb, table in enumerate(self._emb):
            e = _ops.embed(table.weight, tokens[:, cb + 1], has_absent)
            x = e if x is None else x + e
        text = _ops.embed(self.text_emb.weight, tokens[:, 0], has_absent)
        return text if x is None else x + text

    def _attention_in(
        self, layer: _TemporalLayer, x: torch.Tensor, rotation: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        c = self.config
        h = _ops.rms_norm(x, layer.norm1.alpha, c.norm_eps)
        return _ops.qkv_heads(F.linear(h, layer.self_attn.in_proj_weight), c.num_heads, rotation)

    def _rotation(self, positions: torch.Tensor) -> torch.Tensor:
        return _ops.rope_rotation(positions, self.config.head_dim, self.config.max_period)

    def _layer_out(
        self, layer: _TemporalLayer, x: torch.Tensor, attn: torch.Tensor
    ) -> torch.Tensor:
        x = x + F.linear(_ops.merge_heads(attn), layer.self_attn.out_proj.weight)
        h = _ops.rms_norm(x, layer.norm2.alpha, self.config.norm_eps)
        return x + _ops.gated_ffn(h, layer.gating.linear_in.weight, layer.gating.linear_out.weight)

    def temporal_prefill(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Causal pass over positions 0..T-1 of one sequence: x [1, T, dim].

        Returns the normed hidden states [1, T, dim] and the keys/values [L, 2, H, T, D].
        """
        t = x.shape[1]
        if t > self.config.context:
            raise ValueError(f"prefill of {t} positions exceeds the context {self.config.context}")
        rotation = self._rotation(torch.arange(t, device=x.device)[None])
        kv = x.new_empty(self.config.num_layers, 2, self.config.num_heads, t, self.config.head_dim)
        for i, layer in enumerate(self._temporal):
            q, k, v = self._attention_in(layer, x, rotation)
            kv[i, 0], kv[i, 1] = k[0], v[0]
            x = self._layer_out(layer, x, F.scaled_dot_product_attention(q, k, v, is_causal=True))
        return _ops.rms_norm(x, self.out_norm.alpha, self.config.norm_eps), kv

    def temporal_extend(self, x: torch.Tensor, kv: torch.Tensor, start: int) -> torch.Tensor:
        """Causal pass over positions start..start+T-1 after positions 0..start-1: x [1, T, dim].

        ``kv`` [L, 2, H, C, D] holds the keys/values of positions 0..start-1 in its first
        columns and receives this pass's at start..start+T-1. Returns the normed hidden states
        [1, T, dim]. A prefill cut in chunks (``reanchor``) gives what one pass gives.
        """
        c = self.config
        t = x.shape[1]
        end = start + t
        if start < 0 or end > kv.shape[3]:
            raise ValueError(f"positions {start}..{end - 1} do not fit {kv.shape[3]} columns")
        at = torch.arange(start, end, device=x.device)
        rotation = self._rotation(at[None])
        # query at position p sees keys 0..p
        mask = torch.arange(end, device=x.device)[None] <= at[:, None]
        for i, layer in enumerate(self._temporal):
            q, k, v = self._attention_in(layer, x, rotation)
            kv[i, 0, :, start:end] = k[0]
            kv[i, 1, :, start:end] = v[0]
            keys, values = kv[i, 0, None, :, :end], kv[i, 1, None, :, :end]
            attn = F.scaled_dot_product_attention(q, keys, values, attn_mask=mask)
            x = self._layer_out(layer, x, attn)
        return _ops.rms_norm(x, self.out_norm.alpha, c.norm_eps)

    def temporal_extend_at(
        self, x: torch.Tensor, kv: torch.Tensor, at: torch.Tensor, key_positions: torch.Tensor
    ) -> torch.Tensor:
        """``temporal_extend`` with fixed shapes, for a CUDA graph: x [1, T, dim] at positions
        ``at`` [T] (a device tensor, consecutive), attending to every column of ``kv``
        [L, 2, H, C, D] whose position (``key_positions`` = arange(C)) is at most the query's.

        Columns past the last query hold whatever they held (masked), so a pass whose last
        queries are padding leaves junk only where the next pass writes first.
        """
        rotation = self._rotation(at[None])
        mask = key_positions[None] <= at[:, None]
        for i, layer in enumerate(self._temporal):
            q, k, v = self._attention_in(layer, x, rotation)
            keys, values = kv[i, 0], kv[i, 1]
            keys.index_copy_(1, at, k[0])
            values.index_copy_(1, at, v[0])
            attn = F.scaled_dot_product_attention(q, keys[None], values[None], attn_mask=mask)
            x = self._layer_out(layer, x, attn)
        return _ops.rms_norm(x, self.out_norm.alpha, self.config.norm_eps)

    def temporal_extend_rows(
        self, x: torch.Tensor, kv: torch.Tensor, starts: Sequence[int]
    ) -> torch.Tensor:
        """``temporal_extend`` for B sequences at once: x [B, T, dim], row b at positions
        ``starts[b]`` .. ``starts[b] + lengths[b] - 1`` (T = the longest; the rest of a shorter
        row is padding whose output is meaningless), after the keys/values of its positions
        0..starts[b]-1 in ``kv`` [L, 2, B, H, C, D], which receives this pass's. Returns the
        normed hidden states [B, T, dim].

        ``starts`` are host ints (no device sync to size the pass); when every row starts at
        the same position (one persona's voice phases) the keys/values are written as slices,
        not scattered (fewer kernels: the pass is launch-bound on a GPU)."""
        c = self.config
        b, t = x.shape[:2]
        first, end = min(starts), max(starts) + t
        if len(starts) != b or first < 0:
            raise ValueError(f"{len(starts)} starts (lowest {first}) for {b} rows")
        if end > kv.shape[4]:
            raise ValueError(f"positions up to {end - 1} do not fit {kv.shape[4]} columns")
        is_uniform = first == end - t
        steps = torch.arange(t, device=x.device)
        if is_uniform:
            at = (steps + first)[None]  # [1, T]: one layout for every row
        else:
            at = torch.tensor(list(starts), device=x.device)[:, None] + steps[None]  # [B, T]
        rotation = self._rotation(at.expand(b, t))
        # query at position p of row b sees that row's keys 0..p (padding never reaches a
        # real query: its positions come after the row's last one)
        mask = (torch.arange(end, device=x.device)[None, None] <= at[:, :, None])[:, None]
        rows = torch.arange(b, device=x.device)[:, None]
        for i, layer in enumerate(self._temporal):
            q, k, v = self._attention_in(layer, x, rotation)
            if is_uniform:
                kv[i, 0, :, :, first:end] = k
                kv[i, 1, :, :, first:end] = v
            else:
                kv[i, 0][rows, :, at] = k.transpose(1, 2)
                kv[i, 1][rows, :, at] = v.transpose(1, 2)
            keys, values = kv[i, 0, :, :, :end], kv[i, 1, :, :, :end]
            attn = F.scaled_dot_product_attention(q, keys, values, attn_mask=mask)
            x = self._layer_out(layer, x, attn)
        return _ops.rms_norm(x, self.out_norm.alpha, c.norm_eps)

    def temporal_extend_rows_at(
        self, x: torch.Tensor, kv: torch.Tensor, at: torch.Tensor, key_positions: torch.Tensor
    ) -> torch.Tensor:
        """``temporal_extend_rows`` with fixed shapes, for a CUDA graph: x [B, T, dim], row b at
        positions ``at[b]`` [B, T] (a device tensor, consecutive per row), attending to every
        column of its ``kv`` [L, 2, B, H, C, D] row whose position (``key_positions`` =
        arange(C)) is at most the query's. Every ``at`` must be below C; a row's padding
        (positions after its last real one) leaves junk only in columns no real query reads.
        Returns the normed hidden states [B, T, dim]."""
        b = x.shape[0]
        rotation = self._rotation(at)
        mask = (key_positions[None, None] <= at[:, :, None])[:, None]  # [B, 1, T, C]
        rows = torch.arange(b, device=x.device)[:, None]
        for i, layer in enumerate(self._temporal):
            q, k, v = self._attention_in(layer, x, rotation)
            keys, values = kv[i, 0], kv[i, 1]
            keys[rows, :, at] = k.transpose(1, 2)
            values[rows, :, at] = v.transpose(1, 2)
            attn = F.scaled_dot_product_attention(q, keys, values, attn_mask=mask)
            x = self._layer_out(layer, x, attn)
        return _ops.rms_norm(x, self.out_norm.alpha, self.config.norm_eps)

    def temporal_step(
        self,
        x: torch.Tensor,
        positions: torch.Tensor,
        kv_cache: torch.Tensor,
        write_index: torch.Tensor,
        filled: torch.Tensor,
        key_mask: torch.Tensor,
        attention: DecodeAttention | None = None,
        kv_scales: torch.Tensor | None = None,
        kernels: StepKernels | None = None,
    ) -> torch.Tensor:
        """One position per slot: x [B, 1, dim] at ``positions`` [B].

        ``kv_cache`` [L, 2, B, H, C', D] receives this step's keys/values at ``write_index`` [B]
        (a scratch column for inactive slots). Slot b attends to its first ``filled[b]`` key
        columns; ``key_mask`` [B, 1, 1, kv_len] says the same for the first kv_len columns
        (``masked_sdpa``, the default ``attention``). With ``kv_scales`` [L, 2, B, H, C'] (an
        8-bit cache) each written key/value vector is stored scaled (``_ops.quantize_vectors``)
        and ``attention`` gets the layer's scales. ``kernels`` (``_fused.StepKernels``, default
        eager) computes everything but the KV writes and attention. Returns normed hidden [B, 1, dim].
        """
        attend = masked_sdpa if attention is None else attention
        k_fns = _EAGER if kernels is None else kernels
        c = self.config
        rows = torch.arange(x.shape[0], device=x.device)
        rotation = self._rotation(positions[:, None])
        if k_fns.real_rope:
            rotation = torch.view_as_real(rotation)
        for i, layer in enumerate(self._temporal):
            q, k, v = k_fns.attention_in(
                x, layer.norm1.alpha, layer.self_attn.in_proj_weight, c.norm_eps, c.num_heads,
                rotation,
            )  # fmt: skip
            keys, values = kv_cache[i, 0], kv_cache[i, 1]
            if kv_scales is None:
                keys[rows, :, write_index] = k[:, :, 0].to(keys.dtype)
                values[rows, :, write_index] = v[:, :, 0].to(values.dtype)
                attn = attend(q, keys, values, filled, key_mask)
            else:
                # keys and values quantized together: [B, 2, H, D] -> one scale per vector
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

    # -- depformer ------------------------------------------------------------------------

    def depformer_step(
        self,
        step: int,
        hidden: torch.Tensor,
        prev_token: torch.Tensor,
        dep_kv: torch.Tensor,
        kernels: StepKernels | None = None,
    ) -> torch.Tensor:
        """Logits [B, card] of agent codebook ``step`` given the previous token [B].

        ``prev_token`` is the text token at step 0, else codebook ``step - 1``; ``dep_kv``
        [Ld, 2, B, H, steps, D] holds this frame's earlier steps and receives this one.
        """
        c = self.config
        k_fns = _EAGER if kernels is None else kernels
        emb = self.depformer_text_emb if step == 0 else self._depformer_emb[step - 1]
        x = k_fns.depformer_input(hidden, self._depformer_in[step].weight, emb.weight, prev_token)
        d = c.dep_dim
        for i, layer in enumerate(self._dep_layers):
            w_in = layer.self_attn.in_proj_weight[step * 3 * d : (step + 1) * 3 * d]
            q, k, v = k_fns.dep_attention_in(
                x, layer.norm1.alpha, w_in, c.norm_eps, c.dep_num_heads, None
            )
            dep_kv[i, 0, :, :, step] = k[:, :, 0]
            dep_kv[i, 1, :, :, step] = v[:, :, 0]
            attn = F.scaled_dot_product_attention(
                q, dep_kv[i, 0, :, :, : step + 1], dep_kv[i, 1, :, :, : step + 1]
            )
            w_out = layer.self_attn.out_proj.weight[step * d : (step + 1) * d]
            gate = layer.gates[step]
            x = k_fns.dep_layer_out(
                x, attn, w_out, layer.norm2.alpha, gate.linear_in.weight,
                gate.linear_out.weight, c.norm_eps,
            )  # fmt: skip
        return F.linear(x[:, 0], self._linears[step].weight)
