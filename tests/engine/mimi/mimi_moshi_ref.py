"""Builds the moshi 0.2.13 reference Mimi for a ``MimiConfig`` (parity tests only)."""

from __future__ import annotations

from typing import Any

from voicegate.engine.mimi import MimiConfig


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
