# mypy: disable-error-code="no-untyped-def,untyped-decorator"
# (Triton kernels: their arguments cannot carry annotations)
"""Decode attention for the LM's temporal step on CUDA: a Triton split-K kernel.

One query per slot and head against that slot's own filled key columns (``filled[b]``), never
the whole window: a fresh call reads its few hundred columns, a call past 240 s reads 3000.
Work is split over the key axis (``SPLIT`` columns a program) so that batch 1 still fills the
GPU, then a second small kernel merges the splits (log-sum-exp). It reads a bf16 cache, or an
8-bit float cache (e4m3) with one float32 scale per (slot, head, column) kept beside it
(``LMState.kv_scales``; written by ``lm._ops.quantize_vectors``): half the bytes per tick.

Plug in with ``lm.attention = TritonDecodeAttention()``; the LM's ``masked_sdpa`` stays the
reference (and the CPU path). ``TRITON_INTERPRET=1`` runs the kernels on the CPU (tests).

Owns: TritonDecodeAttention, decode_attention_for, triton_available. Imports torch and (lazily) triton.
"""

from __future__ import annotations

import math
import os

import torch

__all__ = [
    "ATTENTION_ENV",
    "SPLIT",
    "TritonDecodeAttention",
    "decode_attention_for",
    "triton_available",
]

ATTENTION_ENV = "VOICEGATE_DECODE_ATTENTION"  # "triton": this kernel over a bf16 cache too

SPLIT = 256  # key columns one program reads (then merged), attention lengths <= LONG_KV
BLOCK_N = 64  # key columns per inner step
NUM_WARPS = 4
# Long attention (a call past its first ~80 s): fewer, longer programs read more bytes in
# flight. Measured on an H100, fp8 cache, 42 slots x 32 heads, every window full, one layer
# (bench/RESULTS.md): split 1024 / block 256 / 8 warps 504 us (69% of 3.0 TB/s) against
# 579 us for 256/64/4; but with fresh calls (~300 columns) 256/64/4 was ~2 ms a tick faster.
LONG_KV = 1024
LONG_CONFIG = (1024, 256, 8)  # split, block, num_warps when kv_len > LONG_KV

try:
    import triton
    import triton.language as tl
except ImportError:  # the CPU image: masked_sdpa only
    triton = None


def triton_available() -> bool:
    return triton is not None


def decode_attention_for(device: torch.device, *, fp8: bool) -> TritonDecodeAttention | None:
    """The decode kernel for ``device``: None (the LM's masked SDPA) unless the cache is 8-bit
    (only this kernel reads it) or VOICEGATE_DECODE_ATTENTION=triton asks for it on CUDA.

    Measured on an H100 (bench/RESULTS.md): over a bf16 cache masked SDPA is as fast as this
    kernel at batch 1 and ~2% faster with every window full, so it stays the bf16 default.
    """
    if device.type != "cuda" or triton is None:
        return None
    if fp8 or os.environ.get(ATTENTION_ENV) == "triton":
        return TritonDecodeAttention()
    return None


if triton is not None:

    @triton.jit
    def _fp8e4m3_to_f32(bits):
        # e4m3fn by hand (the interpreter has no fp8): s eeee mmm, bias 7, no infinities
        b = bits.to(tl.int32)
        sign = tl.where((b & 0x80) != 0, -1.0, 1.0)
        exp = (b >> 3) & 0xF
        man = (b & 0x7).to(tl.float32)
        normal = (1.0 + man / 8.0) * tl.exp2((exp - 7).to(tl.float32))
        sub = man / 8.0 * 0.015625
        return sign * tl.where(exp == 0, sub, normal)

    @triton.jit
    def _partial(
        Q,
        K,
        V,
        KS,
        VS,
        FILLED,
        M_OUT,
        L_OUT,
        ACC_OUT,
        stride_qb,
        stride_qh,
        stride_kb,
        stride_kh,
        stride_kn,
        stride_vb,
        stride_vh,
        stride_vn,
        stride_sb,
        stride_sh,
        H,
        n_splits,
        sm_scale,
        SPLIT_N: tl.constexpr,
        BLOCK: tl.constexpr,
        D: tl.constexpr,
        SCALED: tl.constexpr,
        MANUAL_FP8: tl.constexpr,
    ):
        bh = tl.program_id(0)
        split = tl.program_id(1)
        b = bh // H
        h = bh % H
        filled = tl.load(FILLED + b).to(tl.int32)
        start = split * SPLIT_N
        end = tl.minimum(start + SPLIT_N, filled)
        offs_d = tl.arange(0, D)
        q = tl.load(Q + b * stride_qb + h * stride_qh + offs_d).to(tl.float32) * sm_scale
        m_i = -float("inf")
        l_i = 0.0
        acc = tl.zeros([D], dtype=tl.float32)
        k_base = K + b * stride_kb + h * stride_kh
        v_base = V + b * stride_vb + h * stride_vh
        s_base = b * stride_sb + h * stride_sh
        for i in range(SPLIT_N // BLOCK):  # fixed trip count; masked blocks load nothing
            offs_n = start + i * BLOCK + tl.arange(0, BLOCK)
            live = offs_n < end
            k_ptr = k_base + offs_n[:, None] * stride_kn + offs_d[None, :]
            v_ptr = v_base + offs_n[:, None] * stride_vn + offs_d[None, :]
            if MANUAL_FP8:
                k = _fp8e4m3_to_f32(tl.load(k_ptr, mask=live[:, None], other=0))
                v = _fp8e4m3_to_f32(tl.load(v_ptr, mask=live[:, None], other=0))
            else:
                k = tl.load(k_ptr, mask=live[:, None], other=0.0).to(tl.float32)
                v = tl.load(v_ptr, mask=live[:, None], other=0.0).to(tl.float32)
            scores = tl.sum(k * q[None, :], 1)
            if SCALED:
                scores = scores * tl.load(KS + s_base + offs_n, mask=live, other=0.0)
            scores = tl.where(live, scores, -float("inf"))
            m_new = tl.maximum(m_i, tl.max(scores, 0))
            m_safe = tl.where(m_new == -float("inf"), 0.0, m_new)  # a block with no live column
            alpha = tl.exp(m_i - m_safe)
            p = tl.exp(scores - m_safe)
            l_i = l_i * alpha + tl.sum(p, 0)
            if SCALED:
                p = p * tl.load(VS + s_base + offs_n, mask=live, other=0.0)
            acc = acc * alpha + tl.sum(p[:, None] * v, 0)
            m_i = m_new
        out = bh * n_splits + split
        tl.store(M_OUT + out, m_i)
        tl.store(L_OUT + out, l_i)
        tl.store(ACC_OUT + out * D + offs_d, acc)

    @triton.jit
    def _merge(
        M,
        L,
        ACC,
        OUT,
        stride_ob,
        stride_oh,
        H,
        n_splits,
        NS: tl.constexpr,
        D: tl.constexpr,
    ):
        bh = tl.program_id(0)
        b = bh // H
        h = bh % H
        offs_s = tl.arange(0, NS)
        live = offs_s < n_splits
        offs_d = tl.arange(0, D)
        m = tl.load(M + bh * n_splits + offs_s, mask=live, other=-float("inf"))
        l_s = tl.load(L + bh * n_splits + offs_s, mask=live, other=0.0)
        m_max = tl.max(m, 0)
        w = tl.where(live & (l_s > 0), tl.exp(m - m_max), 0.0)
        acc = tl.load(
            ACC + (bh * n_splits + offs_s)[:, None] * D + offs_d[None, :],
            mask=live[:, None],
            other=0.0,
        )
        num = tl.sum(acc * w[:, None], 0)
        den = tl.sum(l_s * w, 0)
        tl.store(OUT + b * stride_ob + h * stride_oh + offs_d, (num / den).to(OUT.dtype.element_ty))


class TritonDecodeAttention:
    """A ``DecodeAttention`` (see ``voicegate.engine.lm.model``) reading each slot's filled columns.

    ``manual_fp8``: decode e4m3 bits with integer arithmetic instead of the hardware convert
    (needed under ``TRITON_INTERPRET=1``; the bench checks both against ``masked_sdpa``).
    """

    def __init__(
        self,
        *,
        manual_fp8: bool = False,
        num_warps: int | None = None,
        split: int | None = None,
        block: int | None = None,
    ) -> None:
        """``split``/``block``/``num_warps`` fix the launch shape; left out, it follows the
        attention length (``launch_config``)."""
        if split is not None and block is not None and split % block:
            raise ValueError(f"split {split} must be a multiple of block {block}")
        self.manual_fp8 = manual_fp8
        self.num_warps = num_warps
        self.split = split  # key columns one program reads
        self.block = block  # key columns per inner step

    def launch_config(self, kv_len: int) -> tuple[int, int, int]:
        """(split, block, num_warps) for an attention length: fixed ones where given, else
        the measured choice (short: ``SPLIT``/``BLOCK_N``/``NUM_WARPS``; long: ``LONG_CONFIG``)."""
        split, block, warps = LONG_CONFIG if kv_len > LONG_KV else (SPLIT, BLOCK_N, NUM_WARPS)
        split = self.split or split
        block = min(self.block or block, split)
        if split % block:
            block = split
        return split, block, self.num_warps or warps

    def __call__(
        self,
        q: torch.Tensor,
        keys: torch.Tensor,
        values: torch.Tensor,
        filled: torch.Tensor,
        key_mask: torch.Tensor,
        *,
        k_scale: torch.Tensor | None = None,
        v_scale: torch.Tensor | None = None,
    ) -> torch.Tensor:
        if triton is None:
            raise RuntimeError("TritonDecodeAttention needs triton (on the GPU machine)")
        b, h, _, d = q.shape
        kv_len = key_mask.shape[-1]  # the bucket: bounds the grid; each slot stops at filled
        split, block, num_warps = self.launch_config(kv_len)
        n_splits = -(-kv_len // split)
        scaled = k_scale is not None and v_scale is not None
        if scaled and self.manual_fp8:
            keys, values = keys.view(torch.uint8), values.view(torch.uint8)
        rows = b * h * n_splits
        m = torch.empty(rows, device=q.device, dtype=torch.float32)
        lse = torch.empty(rows, device=q.device, dtype=torch.float32)
        acc = torch.empty(rows, d, device=q.device, dtype=torch.float32)
        out = torch.empty(b, h, 1, d, device=q.device, dtype=q.dtype)
        ks = k_scale if scaled else m  # placeholders, never read when not SCALED
        vs = v_scale if scaled else m
        assert ks is not None and vs is not None
        _partial[(b * h, n_splits)](
            q,
            keys,
            values,
            ks,
            vs,
            filled,
            m,
            lse,
            acc,
            q.stride(0),
            q.stride(1),
            keys.stride(0),
            keys.stride(1),
            keys.stride(2),
            values.stride(0),
            values.stride(1),
            values.stride(2),
            ks.stride(0) if scaled else 0,
            ks.stride(1) if scaled else 0,
            h,
            n_splits,
            1.0 / math.sqrt(d),
            SPLIT_N=split,
            BLOCK=block,
            D=d,
            SCALED=scaled,
            MANUAL_FP8=scaled and self.manual_fp8,
            num_warps=num_warps,
        )
        ns = max(2, 1 << (n_splits - 1).bit_length())
        _merge[(b * h,)](
            m, lse, acc, out, out.stride(0), out.stride(1), h, n_splits, NS=ns, D=d, num_warps=4
        )
        return out
