"""Registered architectures. A checkpoint names one of these plus its constructor arguments."""
from __future__ import annotations

import functools
from collections.abc import Callable

import torch
import torch.fx
from torch import nn

REGISTRY: dict[str, Callable[..., nn.Module]] = {}


def register(name: str):
    def deco(fn: Callable[..., nn.Module]):
        REGISTRY[name] = fn
        return fn

    return deco


def build_model(name: str, **args) -> nn.Module:
    try:
        builder = REGISTRY[name]
    except KeyError:
        raise KeyError(f"unknown architecture {name!r}; registered: {', '.join(sorted(REGISTRY))}") from None
    return builder(**args)


class SeedCNN(nn.Module):
    """The student report's baseline: three conv blocks 32/64/128, dense 128, one logit (sigmoid applied outside)."""

    def __init__(self, input_size: int = 32):
        super().__init__()
        blocks = []
        c_in = 3
        for c_out in (32, 64, 128):
            blocks += [nn.Conv2d(c_in, c_out, 3), nn.ReLU(inplace=True), nn.MaxPool2d(2)]
            c_in = c_out
        self.features = nn.Sequential(*blocks)
        side = input_size
        for _ in range(3):
            side = (side - 2) // 2
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(128 * side * side, 128), nn.ReLU(inplace=True), nn.Linear(128, 1))

    def forward(self, x):
        return self.head(self.features(x)).squeeze(1)


def _conv_bn(c_in: int, c_out: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True))


class ResBlock(nn.Module):
    def __init__(self, c: int):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(c, c, 3, 1, 1, bias=False), nn.BatchNorm2d(c), nn.ReLU(inplace=True),
            nn.Conv2d(c, c, 3, 1, 1, bias=False), nn.BatchNorm2d(c),
        )
        self.act = nn.ReLU(inplace=True)

    def forward(self, x):
        return self.act(x + self.body(x))


class NeighbourResidual(nn.Module):
    """Adds the image minus its nearest-neighbour 2x down-and-up copy as three more input channels.

    Generators up-sample in their last layers, which ties each pixel to its neighbours in a way cameras do not;
    this residual (NPR, Tan et al., CVPR 2024) isolates exactly that local relation, so the network does not
    have to find it on its own from a few thousand images. Inputs must have even sides.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([x, neighbour_residual(x)], dim=1)


def neighbour_residual(x: torch.Tensor) -> torch.Tensor:
    return x - nn.functional.interpolate(x[:, :, ::2, ::2], scale_factor=2.0, mode="nearest")


class NeighbourResidualOnly(nn.Module):
    """The residual alone, without the picture: colour, layout and subject, the content a few thousand images
    teach a network to shortcut on, mostly do not reach it."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return neighbour_residual(x)


INPUT_FILTERS = {"none": nn.Identity, "npr": NeighbourResidual, "npr_only": NeighbourResidualOnly}
_FILTER_CHANNELS = {"none": 3, "npr": 6, "npr_only": 3}


class TinyResNet(nn.Module):
    """A small residual net, fully convolutional up to a global average pool, so one definition serves
    32x32 whole images and native-resolution crops alike.

    The stem runs at full resolution because the traces generators leave are pixel-level; later stages are
    cheap, so width there buys accuracy for little time.
    """

    def __init__(self, widths: tuple[int, ...] = (16, 32, 64, 128), blocks: tuple[int, ...] | None = None,
                 dropout: float = 0.1, input_filter: str = "none"):
        super().__init__()
        blocks = blocks or (1,) * len(widths)
        if len(blocks) != len(widths):
            raise ValueError("widths and blocks need one entry per stage")
        if input_filter not in INPUT_FILTERS:
            raise ValueError(f"input_filter must be one of {', '.join(INPUT_FILTERS)}")
        self.input_filter = INPUT_FILTERS[input_filter]()  # no weights: checkpoints keep their key names
        layers: list[nn.Module] = [_conv_bn(_FILTER_CHANNELS[input_filter], widths[0])]
        layers += [ResBlock(widths[0]) for _ in range(blocks[0])]
        for c_in, c_out, n in zip(widths[:-1], widths[1:], blocks[1:]):
            layers += [_conv_bn(c_in, c_out, stride=2)] + [ResBlock(c_out) for _ in range(n)]
        layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(dropout), nn.Linear(widths[-1], 1)]
        self.net = nn.Sequential(*layers)

    def forward(self, x):
        return self.net(self.input_filter(x)).squeeze(1)


@register("seed_cnn")
def seed_cnn(input_size: int = 32) -> nn.Module:
    return SeedCNN(input_size=input_size)


@register("tiny_resnet")
def tiny_resnet(widths: tuple[int, ...] | list[int] = (16, 32, 64, 128), blocks: tuple[int, ...] | list[int] | None = None,
                dropout: float = 0.1, input_filter: str = "none") -> nn.Module:
    return TinyResNet(widths=tuple(widths), blocks=tuple(blocks) if blocks else None, dropout=dropout,
                      input_filter=input_filter)


class ResidualEnergy(nn.Module):
    """How much high-frequency energy a crop holds, in which directions and bands, and nothing else.

    A bank of learned zero-sum filters (the constrained convolution of Bayar & Stamm, 2016: each filter's
    weights sum to zero, so it cannot pass flat colour or brightness, only residual detail), the log of each
    filter's mean energy over the crop, then a small MLP. Pooling over the whole crop leaves no layout,
    subject or colour for it to key on; with a few thousand training images, those content shortcuts are what
    the residual networks here learned instead of anything that held on unseen sources (model card).

    ``relative``: each crop's log energies are taken relative to their own mean (over filters and scales), so
    only the shape of the residual's spectrum and how peaked it is remain, not how much of it there is:
    "smoother reads generated" is what inverted the absolute version on down-scaled photos.
    """

    def __init__(self, filters: int = 16, kernel: int = 5, hidden: int = 16, scales: int = 2, relative: bool = False):
        super().__init__()
        self.filters = nn.Parameter(torch.randn(filters, 3, kernel, kernel) * 0.1)
        self.scales, self.relative = scales, relative
        self.head = nn.Sequential(nn.Linear(filters * 2 * scales, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.filters - self.filters.mean(dim=(2, 3), keepdim=True)
        squares, absolutes = [], []
        for _ in range(self.scales):
            r = nn.functional.conv2d(x, w)
            squares.append(torch.log(r.pow(2).mean(dim=(2, 3)) + 1e-6))
            absolutes.append(torch.log(r.abs().mean(dim=(2, 3)) + 1e-4))
            x = nn.functional.avg_pool2d(x, 2)
        if self.relative:  # each group's mean over filters and scales, taken once
            mean_square, mean_absolute = (torch.cat(g, 1).mean(1, keepdim=True) for g in (squares, absolutes))
            squares = [s - mean_square for s in squares]
            absolutes = [a - mean_absolute for a in absolutes]
        feats = [f for pair in zip(squares, absolutes) for f in pair]  # the absolute version's order
        return self.head(torch.cat(feats, dim=1)).squeeze(1)


@register("residual_energy")
def residual_energy(filters: int = 16, kernel: int = 5, hidden: int = 16, scales: int = 2,
                    relative: bool = False) -> nn.Module:
    return ResidualEnergy(filters=filters, kernel=kernel, hidden=hidden, scales=scales, relative=relative)


# Fixed zero-sum high-pass filters on luminance: first, second and third differences in the image's directions,
# the Laplacian, and two of the SRM residuals of steganalysis (Fridrich & Kodovsky, 2012). Each scaled to unit
# L1 norm, centred in 5 x 5.
_BANK = (
    [[1, -1]], [[1], [-1]], [[1, 0], [0, -1]], [[0, 1], [-1, 0]],
    [[1, -2, 1]], [[1], [-2], [1]], [[1, -3, 3, -1]], [[1], [-3], [3], [-1]],
    [[0, 1, 0], [1, -4, 1], [0, 1, 0]],
    [[-1, 2, -1], [2, -4, 2], [-1, 2, -1]],
    [[-1, 2, -2, 2, -1], [2, -6, 8, -6, 2], [-2, 8, -12, 8, -2], [2, -6, 8, -6, 2], [-1, 2, -2, 2, -1]],
)
_LUMA = (0.299, 0.587, 0.114)


def fixed_bank() -> torch.Tensor:
    """The filters of :data:`_BANK` on luminance, as one F x 3 x 5 x 5 convolution weight."""
    filters = []
    for rows in _BANK:
        a = torch.tensor(rows, dtype=torch.float32)
        f = torch.zeros(5, 5)
        y, x = (5 - a.shape[0]) // 2, (5 - a.shape[1]) // 2
        f[y: y + a.shape[0], x: x + a.shape[1]] = a / a.abs().sum()
        filters.append(f)
    return torch.stack(filters)[:, None] * torch.tensor(_LUMA).view(1, 3, 1, 1)


class ResidualStats(nn.Module):
    """How much high-frequency energy a crop's luminance holds, through fixed filters, and a linear read-out.

    The learned version (ResidualEnergy) could shape its filters to whatever told its training sources apart;
    here only the read-out learns: 11 fixed residuals x 3 scales x (log mean square, log mean absolute) = 66
    numbers, standardised, then one linear layer (``hidden`` > 0: a small MLP). Hand-made statistics of this
    kind held up better on unseen sources than any network trained here (model card, "What it keys on").
    """

    def __init__(self, scales: int = 3, hidden: int = 0):
        super().__init__()
        self.register_buffer("bank", fixed_bank())
        self.scales = scales
        n = len(_BANK) * 2 * scales
        self.norm = nn.BatchNorm1d(n)
        self.head = (nn.Sequential(nn.Linear(n, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, 1)) if hidden
                     else nn.Linear(n, 1))

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The fixed statistics, N x 66: nothing here learns, so a read-out can be fitted on them directly
        (``pixelproof train --optimizer lbfgs``)."""
        feats = []
        for _ in range(self.scales):
            r = nn.functional.conv2d(x, self.bank.to(x.dtype)).permute(0, 2, 3, 1).flatten(1, 2)  # N x HW x F
            feats += [torch.log(r.square().mean(1).float() + 1e-6), torch.log(r.abs().mean(1).float() + 1e-4)]
            x = nn.functional.avg_pool2d(x, 2)
        return torch.cat(feats, dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.norm(self.features(x))).squeeze(1)


@register("residual_stats")
def residual_stats(scales: int = 3, hidden: int = 0) -> nn.Module:
    return ResidualStats(scales=scales, hidden=hidden)


@functools.lru_cache(maxsize=16)
def _spectrum_weights(h: int, w: int, low: tuple[float, float], high: tuple[float, float],
                      device: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(the Hann window, h x w; each band's averaging weights times the Laplacian's power gain over the half
    spectrum rfft2 gives, (h * (w // 2 + 1)) x 2) for an h x w input."""
    window = torch.outer(torch.hann_window(h, periodic=False, dtype=torch.float64),
                         torch.hann_window(w, periodic=False, dtype=torch.float64))
    fy, fx = torch.fft.fftfreq(h, dtype=torch.float64)[:, None], torch.fft.rfftfreq(w, dtype=torch.float64)[None]
    gain = (4 - 2 * torch.cos(2 * torch.pi * fy) - 2 * torch.cos(2 * torch.pi * fx)).square()
    radius = torch.sqrt(fy.square() + fx.square())
    # rfft2 keeps one of each pair of conjugate columns: the others count twice in the full spectrum
    twice = torch.full((w // 2 + 1,), 2.0, dtype=torch.float64)
    twice[0] = 1.0
    if w % 2 == 0:
        twice[-1] = 1.0
    bands = []
    for lo, hi in (low, high):
        mask = ((radius >= lo) & (radius < hi)).double() * twice
        bands.append((gain * mask / mask.sum().clamp(min=1)).flatten())
    return window.float().to(device), torch.stack(bands, 1).float().to(device)


def spectral_ratio(x: torch.Tensor, low: tuple[float, float], high: tuple[float, float]) -> torch.Tensor:
    """log(power in the `low` band) - log(power in the `high` band) of each crop's luminance Laplacian, N x 1.

    The Laplacian is applied as its power gain in the frequency domain, after a Hann window. Always float32:
    in bfloat16 the luminance itself would be rounded by up to half a grey level, noise at exactly the
    frequencies this statistic reads."""
    window, bands = _spectrum_weights(x.shape[2], x.shape[3], low, high, str(x.device))
    with torch.autocast(x.device.type, enabled=False):
        x = x.float()  # luminance channel by channel: a sum over dim 1 is 3x slower on channels-last input
        y = x[:, 0] * _LUMA[0] + x[:, 1] * _LUMA[1] + x[:, 2] * _LUMA[2]
        spectrum = torch.view_as_real(torch.fft.rfft2((y - y.mean((1, 2), keepdim=True)) * window))
        power = spectrum.square().sum(-1).flatten(1) @ bands
        return (torch.log(power[:, :1] + 1e-12) - torch.log(power[:, 1:] + 1e-12))


torch.fx.wrap("spectral_ratio")  # one opaque step to torch.fx (fold_batchnorm traces every served model)


class ResidualSpectrum(nn.Module):
    """One number per crop: how the power of its luminance's Laplacian falls from mid to the highest
    frequencies (:func:`spectral_ratio`: radial bands in cycles per pixel), and a linear read-out.

    Generators' decoders under-produce the finest detail next to the Nyquist frequency; cameras' noise and
    detail fill it, and a photo shrunk for the web keeps the shape of its spectrum where it loses its noise
    level. A ratio of two bands carries no level at all, and level is what every fitted mix of statistics
    learned its training sources by (model card, "How it was chosen").
    """

    def __init__(self, low: tuple[float, float] = (0.125, 0.25), high: tuple[float, float] = (0.375, 0.5)):
        super().__init__()
        self.low, self.high = tuple(low), tuple(high)
        self.norm = nn.BatchNorm1d(1)
        self.head = nn.Linear(1, 1)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The fixed statistic, N x 1 (``pixelproof train --optimizer lbfgs`` fits the read-out on it)."""
        return spectral_ratio(x, self.low, self.high)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # the read-out as elementwise products, which autocast leaves in float32 (it would round nn.Linear's)
        return (self.norm(self.features(x)) * self.head.weight).sum(1) + self.head.bias


@register("residual_spectrum")
def residual_spectrum(low: tuple[float, float] | list[float] = (0.125, 0.25),
                      high: tuple[float, float] | list[float] = (0.375, 0.5)) -> nn.Module:
    return ResidualSpectrum(low=tuple(low), high=tuple(high))
