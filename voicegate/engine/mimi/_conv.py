"""Causal convolutions and the SEANet encoder/decoder of Mimi, streamed with external state.

Module attribute names mirror the upstream checkpoint (``model.3.conv.conv.weight``), so
``state_dict()`` names are the file's names. Streaming state never lives in a module: each
streaming layer says what buffer it needs (``new_state``) and its ``stream`` method takes it.

Owns: conv math and SEANet layout. Imports torch only.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import nn

from voicegate.engine.mimi.config import MimiConfig


def _keep(active: torch.Tensor | None, new: torch.Tensor, old: torch.Tensor) -> None:
    """Write ``new`` into ``old`` for the active batch rows only (all rows if ``active`` is None)."""
    if active is None:
        old.copy_(new)
    else:
        old.copy_(torch.where(active.view(-1, *([1] * (old.dim() - 1))), new, old))


class _ConvHolder(nn.Module):
    """Gives the raw conv the attribute name the checkpoint uses (``<layer>.conv.conv``)."""

    def __init__(self, conv: nn.Conv1d) -> None:
        super().__init__()
        self.conv = conv


class _ConvTrHolder(nn.Module):
    def __init__(self, convtr: nn.ConvTranspose1d) -> None:
        super().__init__()
        self.convtr = convtr


class CausalConv1d(nn.Module):
    """Conv1d padded on the left only, so that streamed frames equal one long pass.

    The left context (``kernel_eff - stride`` samples) is carried between steps in a buffer;
    at the start it is zeros, or, with ``replicate_pad``, the first input sample repeated.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        stride: int = 1,
        dilation: int = 1,
        groups: int = 1,
        bias: bool = True,
        replicate_pad: bool = False,
    ) -> None:
        super().__init__()
        self.conv = _ConvHolder(
            nn.Conv1d(
                in_channels,
                out_channels,
                kernel_size,
                stride,
                dilation=dilation,
                groups=groups,
                bias=bias,
            )
        )
        self.stride = stride
        self.dilation = dilation
        self.groups = groups
        self.replicate_pad = replicate_pad
        self.in_channels = in_channels
        self.context_samples = (kernel_size - 1) * dilation + 1 - stride

    def new_state(self, n_slots: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
        return torch.zeros(
            n_slots, self.in_channels, self.context_samples, device=device, dtype=dtype
        )

    def stream(
        self,
        x: torch.Tensor,
        previous: torch.Tensor,
        active: torch.Tensor | None,
        first: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """One step on ``x`` [B, C, T] (T a multiple of the stride); updates ``previous``."""
        context = self.context_samples
        if context:
            if first is not None:
                # replicate padding: a slot's very first step pads with its first sample
                is_first = first if active is None else first & active
                previous.copy_(torch.where(is_first.view(-1, 1, 1), x[..., :1], previous))
            x = torch.cat([previous, x], dim=-1)
        conv = self.conv.conv
        y = F.conv1d(x, conv.weight, conv.bias, self.stride, 0, self.dilation, self.groups)
        if context:
            _keep(active, x[..., -context:], previous)
        return y


class CausalConvTranspose1d(nn.Module):
    """ConvTranspose1d trimmed on the right; the overlap tail is carried to the next step."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        stride: int,
        groups: int = 1,
        bias: bool = True,
    ) -> None:
        super().__init__()
        self.convtr = _ConvTrHolder(
            nn.ConvTranspose1d(
                in_channels, out_channels, kernel_size, stride, groups=groups, bias=bias
            )
        )
        self.stride = stride
        self.groups = groups
        self.out_channels = out_channels
        self.overlap_samples = kernel_size - stride

    def new_state(self, n_slots: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
        return torch.zeros(
            n_slots, self.out_channels, self.overlap_samples, device=device, dtype=dtype
        )

    def stream(
        self, x: torch.Tensor, partial: torch.Tensor, active: torch.Tensor | None
    ) -> torch.Tensor:
        """One step on ``x`` [B, C, T]; returns [B, C', T * stride] and updates ``partial``."""
        convtr = self.convtr.convtr
        y = F.conv_transpose1d(x, convtr.weight, convtr.bias, self.stride, groups=self.groups)
        overlap = self.overlap_samples
        if overlap:
            y[..., :overlap] += partial
            tail = y[..., -overlap:]
            if convtr.bias is not None:
                # the bias is added once, by the step that emits those samples
                tail = tail - convtr.bias[:, None]
            _keep(active, tail, partial)
            y = y[..., :-overlap]
        return y


class ResnetBlock(nn.Module):
    """SEANet residual block: ELU, conv k (dilated), ELU, conv 1, plus identity skip."""

    def __init__(self, dim: int, kernel_size: int, dilation: int, compress: int) -> None:
        super().__init__()
        hidden = dim // compress
        self.block = nn.Sequential(
            nn.ELU(),
            CausalConv1d(dim, hidden, kernel_size, dilation=dilation),
            nn.ELU(),
            CausalConv1d(hidden, dim, 1),
        )

    def convs(self) -> list[CausalConv1d]:
        return [m for m in self.block if isinstance(m, CausalConv1d)]

    def stream(
        self, x: torch.Tensor, states: Iterator[torch.Tensor], active: torch.Tensor | None
    ) -> torch.Tensor:
        first, second = self.block[1], self.block[3]
        assert isinstance(first, CausalConv1d) and isinstance(second, CausalConv1d)
        v = first.stream(F.elu(x), next(states), active)
        v = second.stream(F.elu(v), next(states), active)
        return x + v


class _Seanet(nn.Module):
    model: nn.Sequential

    def streaming_layers(self) -> list[CausalConv1d | CausalConvTranspose1d]:
        """Every layer with a streaming buffer, in the order ``stream`` consumes them."""
        out: list[CausalConv1d | CausalConvTranspose1d] = []
        for m in self.model:
            if isinstance(m, ResnetBlock):
                out.extend(m.convs())
            elif isinstance(m, CausalConv1d | CausalConvTranspose1d):
                out.append(m)
        return out

    def stream(
        self, x: torch.Tensor, states: Iterator[torch.Tensor], active: torch.Tensor | None
    ) -> torch.Tensor:
        for m in self.model:
            if isinstance(m, nn.ELU):
                x = F.elu(x)
            elif isinstance(m, ResnetBlock):
                x = m.stream(x, states, active)
            elif isinstance(m, CausalConv1d | CausalConvTranspose1d):
                x = m.stream(x, next(states), active)
            else:  # pragma: no cover - the layout is fixed above
                raise TypeError(f"unexpected SEANet layer {type(m).__name__}")
        return x


class SeanetEncoder(_Seanet):
    """Waveform [B, 1, T] -> latent [B, dimension, T / hop] (strides = reversed ratios)."""

    def __init__(self, config: MimiConfig) -> None:
        super().__init__()
        c = config
        mult = 1
        layers: list[nn.Module] = [CausalConv1d(c.channels, c.n_filters, c.kernel_size)]
        for ratio in reversed(c.ratios):
            dim = mult * c.n_filters
            for j in range(c.n_residual_layers):
                layers.append(
                    ResnetBlock(dim, c.residual_kernel_size, c.dilation_base**j, c.compress)
                )
            layers += [nn.ELU(), CausalConv1d(dim, dim * 2, ratio * 2, stride=ratio)]
            mult *= 2
        layers += [nn.ELU(), CausalConv1d(mult * c.n_filters, c.dimension, c.last_kernel_size)]
        self.model = nn.Sequential(*layers)


class SeanetDecoder(_Seanet):
    """Latent [B, dimension, T] -> waveform [B, 1, T * hop] (strides = ratios)."""

    def __init__(self, config: MimiConfig) -> None:
        super().__init__()
        c = config
        mult = 2 ** len(c.ratios)
        layers: list[nn.Module] = [CausalConv1d(c.dimension, mult * c.n_filters, c.kernel_size)]
        for ratio in c.ratios:
            dim = mult * c.n_filters
            layers += [nn.ELU(), CausalConvTranspose1d(dim, dim // 2, ratio * 2, ratio)]
            for j in range(c.n_residual_layers):
                layers.append(
                    ResnetBlock(dim // 2, c.residual_kernel_size, c.dilation_base**j, c.compress)
                )
            mult //= 2
        layers += [nn.ELU(), CausalConv1d(c.n_filters, c.channels, c.last_kernel_size)]
        self.model = nn.Sequential(*layers)
