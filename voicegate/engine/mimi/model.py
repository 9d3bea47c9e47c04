"""The Mimi codec's weights, laid out so that ``state_dict()`` names equal the upstream file's.

A ``MimiModel`` holds weights only; streaming state lives in a ``MimiStreamer``. The
quantizer (codebooks and projections) is kept in float32 whatever dtype the rest uses.

Owns: the module tree and random initialisation. Imports torch only.
"""

from __future__ import annotations

import contextlib
import math

import torch
from torch import nn

from voicegate.engine.mimi._conv import (
    CausalConv1d,
    CausalConvTranspose1d,
    SeanetDecoder,
    SeanetEncoder,
)
from voicegate.engine.mimi._quantizer import SplitResidualVQ
from voicegate.engine.mimi._transformer import MimiTransformer
from voicegate.engine.mimi.config import MimiConfig

__all__ = ["MimiModel"]


class _Downsample(nn.Module):
    """25 Hz -> 12.5 Hz: a learnt stride-2 conv over all channels, replicate-padded."""

    def __init__(self, c: MimiConfig) -> None:
        super().__init__()
        s = c.latent_steps_per_frame
        self.conv = CausalConv1d(
            c.dimension, c.dimension, 2 * s, stride=s, bias=False, replicate_pad=True
        )


class _Upsample(nn.Module):
    """12.5 Hz -> 25 Hz: a learnt depthwise (one filter per channel) transposed conv."""

    def __init__(self, c: MimiConfig) -> None:
        super().__init__()
        s = c.latent_steps_per_frame
        self.convtr = CausalConvTranspose1d(
            c.dimension, c.dimension, 2 * s, s, groups=c.dimension, bias=False
        )


class MimiModel(nn.Module):
    """Mimi's weights: SEANet encoder/decoder, a transformer on each side, the split RVQ.

    Build on the meta device to inspect shapes for free: ``MimiModel(cfg, device="meta")``.
    """

    def __init__(self, config: MimiConfig, device: torch.device | str | None = None) -> None:
        super().__init__()
        self.config = config
        placement = torch.device(device) if device is not None else contextlib.nullcontext()
        with placement:
            self.encoder = SeanetEncoder(config)
            self.decoder = SeanetDecoder(config)
            self.encoder_transformer = MimiTransformer(config)
            self.decoder_transformer = MimiTransformer(config)
            self.quantizer = SplitResidualVQ(config)
            self.downsample = _Downsample(config)
            self.upsample = _Upsample(config)
        self.requires_grad_(False)
        self.eval()

    @property
    def device(self) -> torch.device:
        return self.downsample.conv.conv.conv.weight.device

    @property
    def dtype(self) -> torch.dtype:
        """The dtype of the convolutions and transformers (the quantizer is float32)."""
        return self.downsample.conv.conv.conv.weight.dtype

    def refresh_codebooks(self) -> None:
        """Derive the centroids from the loaded EMA sums; call after changing codebook buffers."""
        self.quantizer.refresh()

    def cast_(self, dtype: torch.dtype) -> MimiModel:
        """Cast everything but the quantizer to ``dtype``, in place."""
        for name, module in self.named_children():
            if name != "quantizer":
                module.to(dtype=dtype)
        return self

    @torch.no_grad()
    def init_random_(self, seed: int = 0) -> MimiModel:
        """Fill every weight with seeded random values of a sensible scale (tests, tiny, smoke).

        Layer scales and norms are randomised too, so a parity test exercises every tensor.
        """
        gen = torch.Generator().manual_seed(seed)

        def normal(t: torch.Tensor, std: float, mean: float = 0.0) -> None:
            t.copy_(torch.randn(t.shape, generator=gen) * std + mean)

        for module in self.modules():
            if isinstance(module, nn.Conv1d):
                fan_in = module.weight.shape[1] * module.weight.shape[2]
                normal(module.weight, 1.0 / math.sqrt(fan_in))
                if module.bias is not None:
                    normal(module.bias, 0.05)
            elif isinstance(module, nn.ConvTranspose1d):
                # each output sample sums in_channels/groups * kernel/stride taps
                w = module.weight
                taps = w.shape[0] // module.groups * w.shape[2] / module.stride[0]
                normal(w, 1.0 / math.sqrt(max(taps, 1.0)))
                if module.bias is not None:
                    normal(module.bias, 0.05)
            elif isinstance(module, nn.Linear):
                normal(module.weight, 1.0 / math.sqrt(module.weight.shape[1]))
            elif isinstance(module, nn.LayerNorm):
                normal(module.weight, 0.1, mean=1.0)
                normal(module.bias, 0.1)
        for name, param in self.named_parameters():
            if name.endswith("in_proj_weight"):
                normal(param, 1.0 / math.sqrt(param.shape[1]))
            elif name.endswith(".scale"):
                param.copy_(torch.rand(param.shape, generator=gen) * 0.5 + 0.25)
        for name, buf in self.named_buffers():
            if name.endswith("cluster_usage"):
                buf.copy_(torch.rand(buf.shape, generator=gen) + 0.5)
            elif name.endswith("embedding_sum"):
                usage = self.get_buffer(name.replace("embedding_sum", "cluster_usage"))
                buf.copy_(torch.randn(buf.shape, generator=gen) * usage.cpu()[:, None])
            elif name.endswith("_initialized"):
                buf.fill_(1.0)
        self.refresh_codebooks()
        return self
