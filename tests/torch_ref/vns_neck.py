"""PyTorch reference of VNS-SAM's NSFM neck (`TFD` in VNS-Train/models/neck.py), for parity tests.

Re-implemented from the behaviour of the released code (docs/released-code.md#nsfm).
Class names, attribute names and registration order follow the released module so that `state_dict()` keys
equal the checkpoint keys under `neck.`. Only the configuration the released model uses is implemented:
the `lf=True` branch (PONO, InstanceNorm, guided filter) is never instantiated there and is refused here.

Quirks kept on purpose: `BasicConv2d` has a ReLU attribute it never applies; the DWT keeps only LL and HH;
MFF concatenates the deepest level first; the channel attention uses a global *max* pool; `one_conv_llhh`
has a hard-coded input width of 352 (= 256 edge channels + 96 inner channels).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn


class BasicConv(nn.Module):
    """Conv (no bias) + norm + optional ReLU."""

    def __init__(
        self, in_channels, out_channels, kernel_size, stride=1, padding=0, dilation=1, need_relu=True, bn=nn.BatchNorm2d
    ):
        super().__init__()
        self.conv = nn.Conv2d(
            in_channels, out_channels, kernel_size, stride=stride, padding=padding, dilation=dilation, bias=False
        )
        self.bn = bn(out_channels)
        self.relu = nn.ReLU()
        self.need_relu = need_relu

    def forward(self, x):
        x = self.bn(self.conv(x))
        return self.relu(x) if self.need_relu else x


class BasicConv2d(nn.Module):
    """Conv (no bias) + BatchNorm. The ReLU attribute exists but is not applied (as released)."""

    def __init__(self, in_planes, out_planes, kernel_size, stride=1, padding=0, dilation=1):
        super().__init__()
        self.conv = nn.Conv2d(
            in_planes, out_planes, kernel_size, stride=stride, padding=padding, dilation=dilation, bias=False
        )
        self.bn = nn.BatchNorm2d(out_planes)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x):
        return self.bn(self.conv(x))


class LayerNorm2d(nn.Module):
    """segment_anything's LayerNorm2d (NCHW, normalise over channels, eps 1e-6)."""

    def __init__(self, num_channels: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(num_channels))
        self.bias = nn.Parameter(torch.zeros(num_channels))
        self.eps = eps

    def forward(self, x):
        u = x.mean(1, keepdim=True)
        s = (x - u).pow(2).mean(1, keepdim=True)
        x = (x - u) / torch.sqrt(s + self.eps)
        return self.weight[:, None, None] * x + self.bias[:, None, None]


class DWT(nn.Module):
    """Haar DWT on NCHW: polyphase parts / 2, signed sums -> (LL, LH, HL, HH)."""

    def forward(self, x):
        a = x[:, :, 0::2, 0::2] / 2  # even row, even col
        b = x[:, :, 1::2, 0::2] / 2  # odd row, even col
        c = x[:, :, 0::2, 1::2] / 2  # even row, odd col
        d = x[:, :, 1::2, 1::2] / 2  # odd row, odd col
        return a + b + c + d, -a + b - c + d, -a - b + c + d, a - b - c + d


class SA(nn.Module):
    """Spatial attention: conv C->C/4, ReLU, conv C/4->1, sigmoid; scales every pixel."""

    def __init__(self, channels):
        super().__init__()
        self.sa = nn.Sequential(
            nn.Conv2d(channels, channels // 4, 3, padding=1, bias=True),
            nn.ReLU(inplace=True),
            nn.Conv2d(channels // 4, 1, 3, padding=1, bias=True),
            nn.Sigmoid(),
        )

    def forward(self, x):
        return x * self.sa(x)


class CA(nn.Module):
    """ECA-like channel attention: global pool, Conv1d(k=3) across channels, sigmoid."""

    def __init__(self, lf=True):
        super().__init__()
        self.ap = nn.AdaptiveAvgPool2d(1) if lf else nn.AdaptiveMaxPool2d(1)
        self.conv = nn.Conv1d(1, 1, kernel_size=3, padding=1, bias=False)
        self.sigmoid = nn.Sigmoid()

    def forward(self, x):
        y = self.ap(x)  # (B, C, 1, 1)
        y = self.conv(y.squeeze(-1).transpose(-1, -2)).transpose(-1, -2).unsqueeze(-1)
        return x * self.sigmoid(y).expand_as(x)


class AM(nn.Module):
    """CA then SA, no residual."""

    def __init__(self, channels, lf):
        super().__init__()
        self.CA = CA(lf=lf)
        self.SA = SA(channels)

    def forward(self, x):
        return self.SA(self.CA(x))


class RB(nn.Module):
    """Residual block x + BasicConv 3x3 (+BN+ReLU)."""

    def __init__(self, channels, lf):
        super().__init__()
        self.RB = BasicConv(channels, channels, 3, padding=1, bn=nn.InstanceNorm2d if lf else nn.BatchNorm2d)

    def forward(self, x):
        return self.RB(x) + x


class ARB(nn.Module):
    """RB then AM (lf=False only; the released lf=True branch with PONO is never used)."""

    def __init__(self, channels, lf):
        super().__init__()
        if lf:
            raise NotImplementedError("the released NSFM only instantiates ARB(lf=False)")
        self.lf = lf
        self.AM = AM(channels, lf)
        self.RB = RB(channels, lf)

    def forward(self, x):
        return self.AM(self.RB(x))


class MFF(nn.Module):
    """Multi-level fusion: concat 4 sub-bands (in call order), BasicConv 1x1 4C->C, ARB."""

    def __init__(self, channels) -> None:
        super().__init__()
        self.conv = BasicConv(4 * channels, channels, kernel_size=1, stride=1)
        self.ARB = ARB(channels=channels, lf=False)

    def forward(self, f1, f2, f3, f4):
        return self.ARB(self.conv(torch.cat([f1, f2, f3, f4], dim=1)))


class Aggregator(nn.Module):
    def __init__(self, in_channels, inner_channels, out_channels) -> None:
        super().__init__()
        self.down_sample_layers = nn.ModuleList(
            nn.Sequential(BasicConv2d(c, inner_channels, kernel_size=1), nn.ReLU()) for c in in_channels
        )
        self.DWT = DWT()
        self.MFF_LL = MFF(inner_channels)
        self.MFF_HH = MFF(inner_channels)
        self.dePixelShuffle = nn.PixelShuffle(2)
        self.one_conv_f4_ll = nn.Conv2d(inner_channels + inner_channels // 4, inner_channels, kernel_size=1)
        self.one_conv_f1_hh = nn.Conv2d(inner_channels + inner_channels // 4, 256, kernel_size=1)
        self.one_conv_llhh = nn.Conv2d(352, inner_channels, kernel_size=1)  # hard-coded as released

    def aggregate(self, LL, HH, f1, f4):
        f1_HH = self.one_conv_f1_hh(torch.cat([self.dePixelShuffle(HH), f1], dim=1))
        f4_LL = self.one_conv_f4_ll(torch.cat([self.dePixelShuffle(LL), f4], dim=1))
        LLHH = self.one_conv_llhh(torch.cat([f1_HH, f4_LL], dim=1))
        return f1_HH, LLHH

    def forward(self, inputs):
        f1, f2, f3, f4 = (layer(x) for layer, x in zip(self.down_sample_layers, inputs, strict=True))
        w1, w2, w3, w4 = (self.DWT(f) for f in (f1, f2, f3, f4))
        LL = self.MFF_LL(w4[0], w3[0], w2[0], w1[0])
        HH = self.MFF_HH(w4[3], w3[3], w2[3], w1[3])
        HH_feat, LLHH_feat = self.aggregate(LL, HH, f1, f4)
        return LLHH_feat, HH_feat


class DecoupleHead(nn.Module):
    def __init__(self, inner_channels, out_channels) -> None:
        super().__init__()
        self.edge_pred_head = nn.Sequential(nn.Conv2d(256, 256, kernel_size=1))
        self.hqfeat_head = nn.Sequential(BasicConv2d(inner_channels, out_channels, kernel_size=3, padding=1), nn.ReLU())
        self.up_sample_layers = nn.Sequential(
            nn.ConvTranspose2d(out_channels, out_channels, kernel_size=2, stride=2),
            LayerNorm2d(out_channels),
            nn.GELU(),
            nn.ConvTranspose2d(out_channels, out_channels, kernel_size=2, stride=2),
            LayerNorm2d(out_channels),
            nn.GELU(),
            nn.Conv2d(out_channels, out_channels, kernel_size=3, padding=1, stride=1),
        )

    def forward(self, LLHH, HH):
        edge_feat = self.edge_pred_head(HH)
        img_feat = self.up_sample_layers(self.hqfeat_head(LLHH))
        return img_feat, edge_feat


class TFD(nn.Module):
    """NSFM: four (B, 64, 64, C) channels-last block outputs, earliest first -> (M (B,32,256,256), G (B,256,64,64))."""

    def __init__(self, in_channels: Sequence[int] = (1024,) * 4, inner_channels: int = 96, out_channels: int = 32):
        super().__init__()
        self.in_channels = list(in_channels)
        self.out_channels = out_channels
        self.inner_channels = inner_channels
        self.aggregator = Aggregator(self.in_channels, inner_channels, out_channels)
        self.decouple_head = DecoupleHead(inner_channels, out_channels)

    def forward(self, inputs):
        states = [x.permute(0, 3, 1, 2) for x in inputs]  # b h w c -> b c h w
        mask_feat, edge_feat = self.aggregator(states)
        return self.decouple_head(mask_feat, edge_feat)


__all__ = [
    "TFD",
    "Aggregator",
    "DecoupleHead",
    "MFF",
    "ARB",
    "RB",
    "AM",
    "CA",
    "SA",
    "DWT",
    "LayerNorm2d",
    "BasicConv",
    "BasicConv2d",
]
