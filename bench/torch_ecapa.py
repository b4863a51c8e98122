"""PyTorch ECAPA-TDNN as the authors train it, for the encoder benchmark only (no tests).

A transcription of the TaoRuijie-style ECAPA-TDNN the paper's authors build on
(github.com/TaoRuijie/ECAPA-TDNN, ``model.py``): Conv1d(80->C, k5) -> ReLU -> BN; three SE-Res2
blocks (k3, scale 8, dilations 2/3/4, SE bottleneck 128 without BN) fed the dense sums x1,
x + x1, x + x1 + x2; concat -> Conv1d(3C->1536, k1) -> ReLU; attentive statistics pooling with
global context (Conv1d(4608->256) -> ReLU -> BN -> Tanh -> Conv1d(256->1536) -> softmax over
time); BN(3072) -> Linear(3072->192) -> BN(192).

Differences from the original, all outside the network: torchaudio is not installable here, so
the features are built from ``torch.stft`` and the same librosa mel matrix hamjax uses (numerically
the authors' ``PreEmphasis`` + ``MelSpectrogram``), and the SpecAugment step is left out (the
benchmark times the network and the features, like hamjax's step without augmentation).

Parameter counts (trainable, head excluded): 15,444,544 at C=1024 and 6,978,176 at C=512; see
``parameter_breakdown`` and bench/ECAPA_PARAMS.md.
"""

from __future__ import annotations

import librosa
import numpy as np
import scipy.signal
import torch
from torch import nn
from torch.nn import functional as F


class SEModule(nn.Module):
    """Squeeze-excitation: mean over time -> Conv1d(C->128) -> ReLU -> Conv1d(128->C) -> sigmoid."""

    def __init__(self, channels: int, bottleneck: int = 128):
        super().__init__()
        self.se = nn.Sequential(
            nn.AdaptiveAvgPool1d(1),
            nn.Conv1d(channels, bottleneck, kernel_size=1),
            nn.ReLU(),
            nn.Conv1d(bottleneck, channels, kernel_size=1),
            nn.Sigmoid(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.se(x)


class Bottle2neck(nn.Module):
    """SE-Res2Net block: 1x1 conv, ``scale - 1`` hierarchical dilated k3 convs, 1x1 conv, SE,
    residual. Each conv is followed by ReLU then BN (the authors' order)."""

    def __init__(self, channels: int, kernel_size: int, dilation: int, scale: int = 8):
        super().__init__()
        width = channels // scale
        self.width, self.nums = width, scale - 1
        self.conv1 = nn.Conv1d(channels, width * scale, kernel_size=1)
        self.bn1 = nn.BatchNorm1d(width * scale)
        pad = (kernel_size // 2) * dilation
        self.convs = nn.ModuleList(
            nn.Conv1d(width, width, kernel_size, dilation=dilation, padding=pad)
            for _ in range(self.nums)
        )
        self.bns = nn.ModuleList(nn.BatchNorm1d(width) for _ in range(self.nums))
        self.conv3 = nn.Conv1d(width * scale, channels, kernel_size=1)
        self.bn3 = nn.BatchNorm1d(channels)
        self.se = SEModule(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.bn1(F.relu(self.conv1(x)))
        splits = torch.split(out, self.width, dim=1)
        pieces = []
        sp = splits[0]
        for i in range(self.nums):
            sp = splits[i] if i == 0 else sp + splits[i]
            sp = self.bns[i](F.relu(self.convs[i](sp)))
            pieces.append(sp)
        pieces.append(splits[self.nums])
        out = self.bn3(F.relu(self.conv3(torch.cat(pieces, dim=1))))
        return self.se(out) + x


class LogMel(nn.Module):
    """The authors' features without torchaudio: PreEmphasis (reflect pad 1, [-0.97, 1]),
    centred reflect-padded ``torch.stft`` (n_fft 512, periodic Hamming 400, hop 160), power,
    librosa HTK mel filters 20-7600 Hz (= torchaudio's MelSpectrogram defaults), log(x + 1e-6),
    mean over time subtracted. ``[B, S] -> [B, 80, T]``."""

    def __init__(self, n_mels: int = 80):
        super().__init__()
        fb = librosa.filters.mel(
            sr=16000, n_fft=512, n_mels=n_mels, fmin=20, fmax=7600, htk=True, norm=None
        )
        self.register_buffer("filters", torch.from_numpy(np.asarray(fb, np.float32)))
        window = scipy.signal.get_window("hamming", 400, fftbins=True).astype(np.float32)
        self.register_buffer("window", torch.from_numpy(window))
        self.register_buffer("flipped_filter", torch.tensor([[[-0.97, 1.0]]]))

    def forward(self, wav: torch.Tensor) -> torch.Tensor:
        x = F.pad(wav.unsqueeze(1), (1, 0), mode="reflect")
        x = F.conv1d(x, self.flipped_filter).squeeze(1)
        spec = torch.stft(
            x,
            n_fft=512,
            hop_length=160,
            win_length=400,
            window=self.window,
            center=True,
            pad_mode="reflect",
            return_complex=True,
        )
        mel = torch.matmul(self.filters, spec.real**2 + spec.imag**2)
        mel = torch.log(mel + 1e-6)
        return mel - mel.mean(dim=-1, keepdim=True)


class ECAPATDNN(nn.Module):
    """The authors' ECAPA-TDNN: features ``[B, 80, T]`` (or waveforms via ``features``) to
    192-d embeddings."""

    def __init__(self, channels: int = 1024, embed_dim: int = 192):
        super().__init__()
        c = channels
        self.features = LogMel()
        self.conv1 = nn.Conv1d(80, c, kernel_size=5, padding=2)
        self.bn1 = nn.BatchNorm1d(c)
        self.layer1 = Bottle2neck(c, kernel_size=3, dilation=2)
        self.layer2 = Bottle2neck(c, kernel_size=3, dilation=3)
        self.layer3 = Bottle2neck(c, kernel_size=3, dilation=4)
        self.layer4 = nn.Conv1d(3 * c, 1536, kernel_size=1)
        self.attention = nn.Sequential(
            nn.Conv1d(4608, 256, kernel_size=1),
            nn.ReLU(),
            nn.BatchNorm1d(256),
            nn.Tanh(),
            nn.Conv1d(256, 1536, kernel_size=1),
            nn.Softmax(dim=2),
        )
        self.bn5 = nn.BatchNorm1d(3072)
        self.fc6 = nn.Linear(3072, embed_dim)
        self.bn6 = nn.BatchNorm1d(embed_dim)

    def forward(self, wav: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            x = self.features(wav)
        x = self.bn1(F.relu(self.conv1(x)))
        x1 = self.layer1(x)
        x2 = self.layer2(x + x1)
        x3 = self.layer3(x + x1 + x2)
        x = F.relu(self.layer4(torch.cat((x1, x2, x3), dim=1)))
        t = x.size(-1)
        mean = x.mean(dim=2, keepdim=True)
        std = torch.sqrt(x.var(dim=2, keepdim=True).clamp(min=1e-4))
        context = torch.cat((x, mean.repeat(1, 1, t), std.repeat(1, 1, t)), dim=1)
        w = self.attention(context)
        mu = torch.sum(x * w, dim=2)
        sg = torch.sqrt((torch.sum(x * x * w, dim=2) - mu * mu).clamp(min=1e-4))
        x = self.bn5(torch.cat((mu, sg), dim=1))
        return self.bn6(self.fc6(x))


def count(module: nn.Module) -> int:
    """Trainable parameters of ``module``."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


def parameter_breakdown(channels: int) -> list[tuple[str, int]]:
    """(block, trainable parameters) for the ECAPA-TDNN at ``channels``, in forward order."""
    model = ECAPATDNN(channels)
    rows = [
        ("conv1 (80->C, k5) + bn1", count(model.conv1) + count(model.bn1)),
        ("layer1 (SE-Res2, dilation 2)", count(model.layer1)),
        ("layer2 (SE-Res2, dilation 3)", count(model.layer2)),
        ("layer3 (SE-Res2, dilation 4)", count(model.layer3)),
        ("layer4 (3C->1536, k1)", count(model.layer4)),
        ("attention (4608->256, BN, 256->1536)", count(model.attention)),
        ("bn5 (3072)", count(model.bn5)),
        ("fc6 (3072->192)", count(model.fc6)),
        ("bn6 (192)", count(model.bn6)),
    ]
    assert sum(n for _, n in rows) == count(model)
    return rows


def block_breakdown(channels: int) -> list[tuple[str, int]]:
    """Parameters inside one SE-Res2 block at ``channels`` (all three are the same size)."""
    block = Bottle2neck(channels, kernel_size=3, dilation=2)
    return [
        ("conv1 (C->C, k1) + bn1", count(block.conv1) + count(block.bn1)),
        (
            f"7 x conv (C/8->C/8, k3) + bn  [each {count(block.convs[0]) + count(block.bns[0])}]",
            count(block.convs) + count(block.bns),
        ),
        ("conv3 (C->C, k1) + bn3", count(block.conv3) + count(block.bn3)),
        ("SE (C->128->C, with biases)", count(block.se)),
    ]


def params_markdown() -> str:
    """The per-block parameter table of bench/ECAPA_PARAMS.md."""
    lines = [
        "# ECAPA-TDNN parameter counts (PyTorch transcription of the authors' model)",
        "",
        "Written by `python bench/torch_ecapa.py --write`. Trainable parameters only (BatchNorm",
        "running statistics are buffers), classification head excluded, embedding layer",
        "(fc6 + bn6) included. Every Conv1d and the Linear have biases; BatchNorm has scale and",
        "bias; the SE bottleneck (128) has no BatchNorm. hamjax's Flax model must match these.",
        "",
    ]
    for c in (512, 1024):
        lines += [f"## C = {c}: {count(ECAPATDNN(c)):,}", "", "| block | parameters |", "|---|---|"]
        lines += [f"| {name} | {n:,} |" for name, n in parameter_breakdown(c)]
        lines += ["", "Inside one SE-Res2 block:", "", "| part | parameters |", "|---|---|"]
        lines += [f"| {name} | {n:,} |" for name, n in block_breakdown(c)]
        lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    import sys
    from pathlib import Path

    md = params_markdown()
    print(md)
    if "--write" in sys.argv[1:]:
        from hamjax.io_utils import write_text

        write_text(Path(__file__).with_name("ECAPA_PARAMS.md"), md)
