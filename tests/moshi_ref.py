"""The moshi 0.2.13 reference (the parity oracle) built with our shapes: ``moshi_lm`` for an
``LMConfig``, ``moshi_mimi`` for a ``MimiConfig``.

Used by the parity tests (``from moshi_ref import ...``: pytest puts tests/ on sys.path) and by
``bench/engine_bench.py`` (which puts tests/ on sys.path itself). moshi is imported only when a
builder is called.
"""

from __future__ import annotations

from typing import Any

import torch

from voicegate.engine.lm import LMConfig
from voicegate.engine.mimi import MimiConfig


def moshi_lm(
    config: LMConfig,
    dep_q: int,
    *,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
) -> Any:
    """moshi's LMModel with ``config``'s shapes and ``dep_q`` depformer codebooks, moshi's own
    initial weights (load a state dict or re-initialise); in eval mode."""
    from moshi.models.lm import LMModel as MoshiLMModel

    # moshi derives the FFN width from a float hidden_scale: check it lands on ours
    ffn = (3 * config.ffn_inner + 1) // 2
    dep_ffn = (3 * config.dep_ffn_inner + 1) // 2
    assert 2 * ffn // 3 == config.ffn_inner and ffn != 4 * config.dim
    assert 2 * dep_ffn // 3 == config.dep_ffn_inner and dep_ffn != 4 * config.dep_dim
    with torch.device(device):
        model = MoshiLMModel(
            delays=list(config.delays),
            n_q=config.n_q,
            dep_q=dep_q,
            card=config.audio_card,
            text_card=config.text_card,
            dim=config.dim,
            num_heads=config.num_heads,
            num_layers=config.num_layers,
            hidden_scale=ffn / config.dim,  # type: ignore[arg-type]  # moshi says int, means float
            norm="rms_norm_f32",
            causal=True,
            layer_scale=None,
            context=config.context,
            max_period=config.max_period,
            gating="silu",
            positional_embedding="rope",
            existing_text_padding_id=config.text_padding_id,
            depformer_dim=config.dep_dim,
            depformer_dim_feedforward=dep_ffn,
            depformer_num_heads=config.dep_num_heads,
            depformer_num_layers=config.dep_num_layers,
            depformer_layer_scale=None,
            depformer_multi_linear=True,
            depformer_context=dep_q,
            depformer_max_period=config.max_period,
            depformer_gating="silu",
            depformer_pos_emb="none",
            depformer_weights_per_step=True,
            device=device,
            dtype=dtype,
        )
    return model.eval()


def moshi_mimi(config: MimiConfig, state: dict[str, Any]) -> Any:
    """moshi's MimiModel with ``config``'s shapes, loaded with ``state`` (float32, CPU)."""
    from moshi.models.loaders import get_mimi

    c = config
    seanet = {
        "channels": c.channels,
        "dimension": c.dimension,
        "causal": True,
        "n_filters": c.n_filters,
        "n_residual_layers": c.n_residual_layers,
        "activation": "ELU",
        "compress": c.compress,
        "dilation_base": c.dilation_base,
        "disable_norm_outer_blocks": 0,
        "kernel_size": c.kernel_size,
        "residual_kernel_size": c.residual_kernel_size,
        "last_kernel_size": c.last_kernel_size,
        "norm": "none",
        "pad_mode": "constant",
        "ratios": list(c.ratios),
        "true_skip": True,
    }
    quantizer = {
        "dimension": c.codebook_dim,
        "n_q": c.n_q,
        "bins": c.codebook_size,
        "input_dimension": c.dimension,
        "output_dimension": c.dimension,
    }
    transformer = {
        "d_model": c.dimension,
        "num_heads": c.transformer_heads,
        "num_layers": c.transformer_layers,
        "causal": True,
        "layer_scale": c.layer_scale,
        "context": c.transformer_context,
        "conv_layout": True,
        "max_period": c.rope_max_period,
        "gating": "none",
        "norm": "layer_norm",
        "positional_embedding": "rope",
        "dim_feedforward": c.transformer_ffn,
        "input_dimension": c.dimension,
        "output_dimensions": [c.dimension],
    }
    mimi_config = {
        "sample_rate": c.sample_rate_hz,
        "channels": c.channels,
        "frame_rate": c.frame_rate_hz,
        "seanet": seanet,
        "quantizer": quantizer,
        "transformer": transformer,
    }
    model = get_mimi(None, mimi_config, device="cpu", num_codebooks=c.n_q_served)
    model.load_state_dict(state, strict=True)
    return model.eval()


def moshi_stt(config: Any, *, device: torch.device | str = "cpu") -> Any:
    """moshi's LMModel for an ``SttConfig`` (dep_q 0, all delays 0, extra heads), float32, in
    eval mode; load a state dict into it."""
    from moshi.models.lm import LMModel as MoshiLMModel

    ffn = (3 * config.ffn_inner + 1) // 2
    assert 2 * ffn // 3 == config.ffn_inner and ffn != 4 * config.dim
    with torch.device(device):
        model = MoshiLMModel(
            delays=[0] * (config.n_q + 1),
            n_q=config.n_q,
            dep_q=0,
            card=config.audio_card,
            text_card=config.text_card,
            dim=config.dim,
            num_heads=config.num_heads,
            num_layers=config.num_layers,
            hidden_scale=ffn / config.dim,  # type: ignore[arg-type]  # moshi says int, means float
            norm="rms_norm_f32",
            causal=True,
            layer_scale=None,
            context=config.context,
            max_period=config.max_period,
            gating="silu",
            positional_embedding="rope",
            existing_text_padding_id=config.text_padding_id,
            extra_heads_num_heads=config.extra_heads,
            extra_heads_dim=config.extra_head_dim,
            depformer_multi_linear=True,
            depformer_dim=1024,
            depformer_num_heads=16,
            depformer_num_layers=6,
            depformer_pos_emb="none",
            depformer_weights_per_step=True,
            device=device,
            dtype=torch.float32,
        )
    return model.eval()
