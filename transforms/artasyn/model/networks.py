"""The reconstruction network of the ART-ASyn detector (``docs/method.md`` section 3).

An encoder-decoder UNet with skip connections that maps a (possibly anomalous) chest X-ray
to a reconstruction of its healthy version. It follows the layout of the authors' network
(a diffusion-style UNet used without any timestep input): pre-activation residual blocks
(norm, SiLU, conv, norm, SiLU, dropout, conv) with two blocks per level, residual blocks
that down- and up-sample, single-head self-attention at chosen downsample factors, batch
normalization and one output channel. Nothing of the timestep machinery is kept.

The bottleneck features used by the feature-consistency loss (``L_feat``) are the encoder
output *before* the middle block; :meth:`AnomalyUNet.forward_with_features` returns them
together with the reconstruction, computing the encoder once.

Example::

    >>> import torch
    >>> from artasyn.model.networks import AnomalyUNet
    >>> net = AnomalyUNet(channels=8, channel_mult=(1, 2, 2), num_res_blocks=1, attention_downsample=(4,))
    >>> x = torch.rand(2, 1, 64, 64)
    >>> recon, feats = net.forward_with_features(x)
    >>> recon.shape, feats.shape
    (torch.Size([2, 1, 64, 64]), torch.Size([2, 16, 16, 16]))

The module is TorchScript-scriptable (``torch.jit.script``), so ``monai.bundle ckpt_export``
works on it, and runs with ``channels_last`` memory format and CUDA AMP.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from monai.networks.layers.factories import Conv, Pool
from monai.networks.layers.utils import get_norm_layer
from torch import nn

from ..constants import (
    UNET_ATTENTION_DOWNSAMPLE,
    UNET_CHANNEL_MULT,
    UNET_CHANNELS,
    UNET_DROPOUT,
    UNET_NUM_HEADS,
    UNET_NUM_RES_BLOCKS,
)

__all__ = ["AnomalyUNet", "AttentionBlock", "ResBlock", "PAPER_CONFIG", "SMALL_CONFIG"]

#: The authors' network at 256 x 256 (``docs/method.md`` section 3).
PAPER_CONFIG: dict = {
    "channels": UNET_CHANNELS,
    "channel_mult": UNET_CHANNEL_MULT,
    "num_res_blocks": UNET_NUM_RES_BLOCKS,
    "attention_downsample": UNET_ATTENTION_DOWNSAMPLE,
    "num_heads": UNET_NUM_HEADS,
    "dropout": UNET_DROPOUT,
    "norm": "batch",
    "resblock_updown": True,
}

#: A small network for CPU runs and tests.
SMALL_CONFIG: dict = {
    "channels": 8,
    "channel_mult": (1, 2, 2),
    "num_res_blocks": 1,
    "attention_downsample": (4,),
    "num_heads": 1,
    "dropout": 0.1,
    "norm": "batch",
    "resblock_updown": True,
}


def _zero_(module: nn.Module) -> nn.Module:
    """Zero the parameters of ``module`` (residual branches start as the identity)."""
    for p in module.parameters():
        nn.init.zeros_(p)
    return module


class _Upsample(nn.Module):
    """Nearest-neighbour upsampling by 2 on every spatial axis."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.interpolate(x, scale_factor=2.0, mode="nearest")


class ResBlock(nn.Module):
    """Pre-activation residual block, optionally resampling (``docs/method.md`` section 3).

    ``h = conv(drop(act(norm(conv(resample(act(norm(x))))))))``, output ``skip(resample(x)) + h``.

    Args:
        spatial_dims: 2 or 3.
        in_channels: channels of the input.
        out_channels: channels of the output; a 1x1 convolution adapts the skip path when it
            differs from ``in_channels``.
        dropout: dropout probability before the second convolution.
        norm: MONAI norm spec (``"batch"``, ``("group", {"num_groups": 8})``, ...).
        resample: ``"none"``, ``"down"`` (2x average pooling) or ``"up"`` (2x nearest).
        zero_init: start the residual branch at zero (as the authors do).
    """

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        out_channels: int,
        dropout: float = 0.0,
        norm: str | tuple = "batch",
        resample: str = "none",
        zero_init: bool = True,
    ) -> None:
        super().__init__()
        conv = Conv[Conv.CONV, spatial_dims]
        self.in_norm = get_norm_layer(norm, spatial_dims=spatial_dims, channels=in_channels)
        self.in_act = nn.SiLU()
        if resample == "down":
            self.resample: nn.Module = Pool[Pool.AVG, spatial_dims](kernel_size=2, stride=2)
        elif resample == "up":
            self.resample = _Upsample()
        elif resample == "none":
            self.resample = nn.Identity()
        else:
            raise ValueError(f"ResBlock resample must be 'none', 'down' or 'up', got {resample!r}")
        self.in_conv = conv(in_channels, out_channels, kernel_size=3, padding=1)
        self.out_norm = get_norm_layer(norm, spatial_dims=spatial_dims, channels=out_channels)
        self.out_act = nn.SiLU()
        self.drop = nn.Dropout(p=dropout)
        self.out_conv = conv(out_channels, out_channels, kernel_size=3, padding=1)
        if zero_init:
            _zero_(self.out_conv)
        if in_channels == out_channels:
            self.skip: nn.Module = nn.Identity()
        else:
            self.skip = conv(in_channels, out_channels, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.in_act(self.in_norm(x))
        h = self.in_conv(self.resample(h))
        x = self.resample(x)
        h = self.out_conv(self.drop(self.out_act(self.out_norm(h))))
        return self.skip(x) + h


class AttentionBlock(nn.Module):
    """Spatial self-attention with a residual connection (``docs/method.md`` section 3).

    Every position attends to every other one: ``x + proj(attn(qkv(norm(x))))``, with a
    1x1 projection to queries, keys and values and scaled dot-product attention.

    Args:
        spatial_dims: 2 or 3.
        channels: feature channels; must be divisible by ``num_heads``.
        num_heads: attention heads.
        norm: MONAI norm spec.
        zero_init: start the output projection at zero (as the authors do).
    """

    def __init__(
        self,
        spatial_dims: int,
        channels: int,
        num_heads: int = 1,
        norm: str | tuple = "batch",
        zero_init: bool = True,
    ) -> None:
        super().__init__()
        if channels % num_heads != 0:
            raise ValueError(f"AttentionBlock: channels {channels} not divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.norm = get_norm_layer(norm, spatial_dims=spatial_dims, channels=channels)
        self.qkv = nn.Conv1d(channels, 3 * channels, kernel_size=1)
        self.proj = nn.Conv1d(channels, channels, kernel_size=1)
        if zero_init:
            _zero_(self.proj)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c = x.shape[0], x.shape[1]
        qkv = self.qkv(self.norm(x).reshape(b, c, -1))  # B x 3C x L
        length = qkv.shape[-1]
        head_ch = c // self.num_heads
        # B x 3 x heads x head_ch x L -> three of B x heads x L x head_ch
        qkv = qkv.reshape(b, 3, self.num_heads, head_ch, length).transpose(-1, -2)
        h = F.scaled_dot_product_attention(qkv[:, 0], qkv[:, 1], qkv[:, 2])
        h = h.transpose(-1, -2).reshape(b, c, length)
        return x + self.proj(h).reshape(x.shape)


class AnomalyUNet(nn.Module):
    """The ART-ASyn reconstruction UNet (``docs/method.md`` section 3).

    Encoder: a stem convolution, then for each level ``num_res_blocks`` residual blocks
    (each followed by self-attention where the level's downsample factor is in
    ``attention_downsample``) and, except at the last level, a downsampling residual block.
    Middle: residual block, attention, residual block. Decoder: for each level in reverse,
    ``num_res_blocks + 1`` residual blocks each fed the concatenation of the running
    features and one encoder skip, attention where the encoder had it, and an upsampling
    residual block ending every level but the first. Head: norm, SiLU, 3x3 convolution.

    With the defaults (the paper's network) and a 256 x 256 input, the levels run at 256,
    128, 64, 32 and 16 pixels; attention is applied at the 32 x 32 and 16 x 16 maps and in
    the middle block (the factor 32, an 8 x 8 map, is listed by the authors but never
    reached with five levels, exactly as in their code).

    Args:
        spatial_dims: 2 (images) or 3.
        in_channels: input channels (1 for grayscale CXR, values in [0, 1]).
        out_channels: output channels (the reconstruction).
        channels: base width; level ``i`` has ``channels * channel_mult[i]`` channels.
        channel_mult: width multiplier per level; ``len(channel_mult) - 1`` downsamplings, so
            spatial sizes must be multiples of ``2 ** (len(channel_mult) - 1)``.
        num_res_blocks: residual blocks per encoder level.
        attention_downsample: downsample factors (1, 2, 4, ...) at which self-attention runs.
        num_heads: attention heads.
        dropout: dropout probability in the residual blocks.
        norm: MONAI norm spec, ``"batch"`` as the authors.
        resblock_updown: resample with residual blocks (True, the authors') or with plain
            average pooling / nearest upsampling (False).
        zero_init: zero-initialize the last convolution of every residual branch, the
            attention projections and the output convolution (the authors' initialization;
            the output is 0 at the start of training).

    Input: ``B x in_channels x H x W`` float. Output of :meth:`forward`: same spatial size,
    ``out_channels`` channels.
    """

    def __init__(
        self,
        spatial_dims: int = 2,
        in_channels: int = 1,
        out_channels: int = 1,
        channels: int = UNET_CHANNELS,
        channel_mult: Sequence[int] = UNET_CHANNEL_MULT,
        num_res_blocks: int = UNET_NUM_RES_BLOCKS,
        attention_downsample: Sequence[int] = UNET_ATTENTION_DOWNSAMPLE,
        num_heads: int = UNET_NUM_HEADS,
        dropout: float = UNET_DROPOUT,
        norm: str | tuple = "batch",
        resblock_updown: bool = True,
        zero_init: bool = True,
    ) -> None:
        super().__init__()
        if spatial_dims not in (1, 2, 3):
            raise ValueError(f"AnomalyUNet: spatial_dims must be 1, 2 or 3, got {spatial_dims}")
        if len(channel_mult) < 1 or num_res_blocks < 1:
            raise ValueError("AnomalyUNet: channel_mult needs at least one level and num_res_blocks >= 1")
        conv = Conv[Conv.CONV, spatial_dims]
        attn_ds = {int(a) for a in attention_downsample}
        self.spatial_dims = spatial_dims
        self.size_divisor: int = 2 ** (len(channel_mult) - 1)

        def res(cin: int, cout: int, resample: str = "none") -> nn.Module:
            return ResBlock(spatial_dims, cin, cout, dropout, norm, resample, zero_init)

        def attn(ch: int) -> nn.Module:
            return AttentionBlock(spatial_dims, ch, num_heads, norm, zero_init)

        def resampler(ch: int, resample: str) -> nn.Module:
            if resblock_updown:
                return res(ch, ch, resample)
            if resample == "down":
                return Pool[Pool.AVG, spatial_dims](kernel_size=2, stride=2)
            return _Upsample()

        ch = int(channel_mult[0] * channels)
        self.stem = conv(in_channels, ch, kernel_size=3, padding=1)
        encoder: list[nn.Module] = []
        skip_channels = [ch]
        ds = 1
        for level, mult in enumerate(channel_mult):
            for _ in range(num_res_blocks):
                out_ch = int(mult * channels)
                layers = [res(ch, out_ch)]
                ch = out_ch
                if ds in attn_ds:
                    layers.append(attn(ch))
                encoder.append(nn.Sequential(*layers))
                skip_channels.append(ch)
            if level != len(channel_mult) - 1:
                encoder.append(nn.Sequential(resampler(ch, "down")))
                skip_channels.append(ch)
                ds *= 2
        self.encoder = nn.ModuleList(encoder)
        self.middle = nn.Sequential(res(ch, ch), attn(ch), res(ch, ch))

        decoder: list[nn.Module] = []
        for level in range(len(channel_mult) - 1, -1, -1):
            mult = channel_mult[level]
            for i in range(num_res_blocks + 1):
                out_ch = int(mult * channels)
                layers = [res(ch + skip_channels.pop(), out_ch)]
                ch = out_ch
                if ds in attn_ds:
                    layers.append(attn(ch))
                if level > 0 and i == num_res_blocks:
                    layers.append(resampler(ch, "up"))
                    ds //= 2
                decoder.append(nn.Sequential(*layers))
        self.decoder = nn.ModuleList(decoder)
        head_conv = conv(ch, out_channels, kernel_size=3, padding=1)
        if zero_init:
            _zero_(head_conv)
        self.head = nn.Sequential(get_norm_layer(norm, spatial_dims=spatial_dims, channels=ch), nn.SiLU(), head_conv)

    def _check_input(self, x: torch.Tensor) -> None:
        if x.dim() != self.spatial_dims + 2:
            raise ValueError(
                "AnomalyUNet expects a B x C x spatial tensor with "
                + str(self.spatial_dims)
                + " spatial dims, got shape "
                + str(list(x.shape))
            )
        for s in x.shape[2:]:
            if s % self.size_divisor != 0:
                raise ValueError(
                    "AnomalyUNet: spatial size "
                    + str(list(x.shape[2:]))
                    + " must be a multiple of "
                    + str(self.size_divisor)
                    + " (2 ** (len(channel_mult) - 1))"
                )

    def _encode(self, x: torch.Tensor) -> list[torch.Tensor]:
        """All encoder outputs, the stem first and the bottleneck last."""
        self._check_input(x)
        h = self.stem(x)
        hs = [h]
        for block in self.encoder:
            h = block(h)
            hs.append(h)
        return hs

    def _decode(self, hs: list[torch.Tensor]) -> torch.Tensor:
        h = self.middle(hs[-1])
        skips = list(hs)
        for block in self.decoder:
            h = block(torch.cat([h, skips.pop()], dim=1))
        return self.head(h)

    @torch.jit.export
    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Bottleneck features: the encoder output before the middle block, ``B x C' x H/d x W/d``."""
        return self._encode(x)[-1]

    @torch.jit.export
    def encoder_features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Every encoder output, the stem first and the bottleneck last (``B x C_i x H_i x W_i`` each)."""
        return self._encode(x)

    @torch.jit.export
    def forward_with_features(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(reconstruction, bottleneck features)`` with one pass through the encoder."""
        hs = self._encode(x)
        return self._decode(hs), hs[-1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The reconstruction of ``x``, same shape as ``x`` with ``out_channels`` channels."""
        return self._decode(self._encode(x))
