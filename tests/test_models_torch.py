"""hamjax encoders against independent PyTorch transcriptions, with weights ported by
:func:`hamjax.models.convert.from_torch_state_dict`.

The two reference modules below are written from the architecture descriptions (the authors'
TaoRuijie-style ECAPA-TDNN and WeSpeaker's ResNet), with PyTorch's NCW/NCHW layout and
attribute names, so equal outputs show that layout, padding, block order, pooling formulas and
BatchNorm semantics agree, in eval and in train mode. Small widths keep them fast.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from hamjax import models
from hamjax.models import convert

torch = pytest.importorskip("torch")
tnn = torch.nn


class _SE(tnn.Module):
    def __init__(self, c, bottleneck):
        super().__init__()
        self.se = tnn.Sequential(
            tnn.AdaptiveAvgPool1d(1),
            tnn.Conv1d(c, bottleneck, 1),
            tnn.ReLU(),
            tnn.Conv1d(bottleneck, c, 1),
            tnn.Sigmoid(),
        )

    def forward(self, x):
        return x * self.se(x)


class _Res2(tnn.Module):
    def __init__(self, c, dilation, scale, bottleneck):
        super().__init__()
        self.width, self.nums = c // scale, scale - 1
        w = self.width
        self.conv1 = tnn.Conv1d(c, w * scale, 1)
        self.bn1 = tnn.BatchNorm1d(w * scale)
        pad = dilation  # floor(3 / 2) * dilation
        self.convs = tnn.ModuleList(
            [tnn.Conv1d(w, w, 3, dilation=dilation, padding=pad) for _ in range(self.nums)]
        )
        self.bns = tnn.ModuleList([tnn.BatchNorm1d(w) for _ in range(self.nums)])
        self.conv3 = tnn.Conv1d(w * scale, c, 1)
        self.bn3 = tnn.BatchNorm1d(c)
        self.se = _SE(c, bottleneck)

    def forward(self, x):
        out = self.bn1(torch.relu(self.conv1(x)))
        spx = torch.split(out, self.width, 1)
        ys, sp = [], None
        for i in range(self.nums):
            sp = spx[i] if i == 0 else sp + spx[i]
            sp = self.bns[i](torch.relu(self.convs[i](sp)))
            ys.append(sp)
        out = torch.cat([*ys, spx[self.nums]], 1)
        out = self.se(self.bn3(torch.relu(self.conv3(out))))
        return out + x


class _TorchECAPA(tnn.Module):
    def __init__(self, f, c, bottleneck, mfa, att, emb):
        super().__init__()
        self.conv1 = tnn.Conv1d(f, c, 5, padding=2)
        self.bn1 = tnn.BatchNorm1d(c)
        self.layer1 = _Res2(c, 2, 8, bottleneck)
        self.layer2 = _Res2(c, 3, 8, bottleneck)
        self.layer3 = _Res2(c, 4, 8, bottleneck)
        self.layer4 = tnn.Conv1d(3 * c, mfa, 1)
        self.attention = tnn.Sequential(
            tnn.Conv1d(3 * mfa, att, 1),
            tnn.ReLU(),
            tnn.BatchNorm1d(att),
            tnn.Tanh(),
            tnn.Conv1d(att, mfa, 1),
            tnn.Softmax(dim=2),
        )
        self.bn5 = tnn.BatchNorm1d(2 * mfa)
        self.fc6 = tnn.Linear(2 * mfa, emb)
        self.bn6 = tnn.BatchNorm1d(emb)

    def forward(self, x):  # x: [B, F, T]
        x = self.bn1(torch.relu(self.conv1(x)))
        x1 = self.layer1(x)
        x2 = self.layer2(x + x1)
        x3 = self.layer3(x + x1 + x2)
        x = torch.relu(self.layer4(torch.cat((x1, x2, x3), 1)))
        t = x.shape[-1]
        g = torch.cat(
            (
                x,
                x.mean(2, keepdim=True).repeat(1, 1, t),
                torch.sqrt(x.var(2, keepdim=True).clamp(min=1e-4)).repeat(1, 1, t),
            ),
            1,
        )
        w = self.attention(g)
        mu = torch.sum(x * w, 2)
        sg = torch.sqrt((torch.sum(x * x * w, 2) - mu**2).clamp(min=1e-4))
        return self.bn6(self.fc6(self.bn5(torch.cat((mu, sg), 1))))


class _Basic(tnn.Module):
    def __init__(self, cin, cout, stride):
        super().__init__()
        self.conv1 = tnn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = tnn.BatchNorm2d(cout)
        self.conv2 = tnn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = tnn.BatchNorm2d(cout)
        self.shortcut = tnn.Sequential()
        if stride != 1 or cin != cout:
            self.shortcut = tnn.Sequential(
                tnn.Conv2d(cin, cout, 1, stride, bias=False), tnn.BatchNorm2d(cout)
            )

    def forward(self, x):
        out = torch.relu(self.bn1(self.conv1(x)))
        return torch.relu(self.bn2(self.conv2(out)) + self.shortcut(x))


class _TorchResNet(tnn.Module):
    def __init__(self, f, m, emb, num_blocks):
        super().__init__()
        self.conv1 = tnn.Conv2d(1, m, 3, 1, 1, bias=False)
        self.bn1 = tnn.BatchNorm2d(m)
        cin = m
        for stage, n in enumerate(num_blocks):
            cout = m * 2**stage
            blocks = []
            for j in range(n):
                blocks.append(_Basic(cin, cout, 2 if stage > 0 and j == 0 else 1))
                cin = cout
            setattr(self, f"layer{stage + 1}", tnn.Sequential(*blocks))
        self.seg_1 = tnn.Linear(2 * cin * (f // 8), emb)

    def forward(self, x):  # x: [B, T, F]
        out = torch.relu(self.bn1(self.conv1(x.permute(0, 2, 1).unsqueeze(1))))
        out = self.layer4(self.layer3(self.layer2(self.layer1(out))))  # [B, C, F', T']
        mean = out.mean(-1).flatten(1)
        std = torch.sqrt(out.var(-1) + 1e-8).flatten(1)
        return self.seg_1(torch.cat((mean, std), 1))


F = 40


def _randomise_bn(model, seed):
    g = torch.Generator().manual_seed(seed)
    for mod in model.modules():
        if isinstance(mod, tnn.BatchNorm1d | tnn.BatchNorm2d):
            n = mod.num_features
            mod.weight.data = torch.rand(n, generator=g) + 0.5
            mod.bias.data = 0.5 * torch.randn(n, generator=g)
            mod.running_mean.data = 0.5 * torch.randn(n, generator=g)
            mod.running_var.data = torch.rand(n, generator=g) + 0.5


@functools.cache
def _pair(kind):
    torch.manual_seed(0)
    if kind == "ecapa":
        ref = _TorchECAPA(F, c=16, bottleneck=4, mfa=24, att=8, emb=16)
        enc = models.create_encoder(
            "ecapa_tdnn",
            channels=16,
            se_bottleneck=4,
            mfa_channels=24,
            attention_channels=8,
            embed_dim=16,
        )
        prefix = "speaker_encoder."  # as in the authors' saved checkpoints
    else:
        # ResNet18's layout: two blocks per stage covers identity and projection shortcuts and
        # the multi-block naming at a third of ResNet34's compile time.
        ref = _TorchResNet(F, m=4, emb=16, num_blocks=(2, 2, 2, 2))
        enc = models.create_encoder("resnet18", m_channels=4, embed_dim=16)
        prefix = ""
    _randomise_bn(ref, 1)
    sd = {prefix + k: v.detach().numpy() for k, v in ref.state_dict().items()}
    sd[prefix + "torchfbank.1.mel_scale.fb"] = np.zeros((257, 80))  # ignored extra keys
    variables = convert.from_torch_state_dict(enc, sd, num_features=F, prefix=prefix)
    fns = (
        jax.jit(lambda v, x: enc.apply(v, x, train=False)),
        jax.jit(lambda v, x: enc.apply(v, x, train=True, mutable=["batch_stats"])),
    )
    return ref, enc, variables, fns


@pytest.mark.parametrize("kind", ["ecapa", "resnet"])
def test_matches_pytorch_reference(kind):
    ref, enc, variables, (eval_fn, train_fn) = _pair(kind)
    x = np.random.default_rng(0).standard_normal((4, 37, F)).astype(np.float32)
    xt = torch.from_numpy(x)
    ref.eval()
    with torch.no_grad():
        expected = (ref(xt.transpose(1, 2)) if kind == "ecapa" else ref(xt)).numpy()
    np.testing.assert_allclose(eval_fn(variables, jnp.asarray(x)), expected, rtol=1e-4, atol=1e-4)

    ref.train()
    with torch.no_grad():
        expected = (ref(xt.transpose(1, 2)) if kind == "ecapa" else ref(xt)).numpy()
    ref.eval()
    got, updates = train_fn(variables, jnp.asarray(x))
    np.testing.assert_allclose(got, expected, rtol=1e-3, atol=1e-3)
    # Running means follow PyTorch's momentum 0.1 (the variances differ by N/(N-1): PyTorch
    # feeds the unbiased batch variance into running_var, flax the biased one).
    ported = convert.from_torch_state_dict(
        enc, {k: v.detach().numpy() for k, v in ref.state_dict().items()}, num_features=F
    )
    _check_running_means(updates["batch_stats"], ported["batch_stats"])


def _check_running_means(ours, theirs):
    flat_ours = dict(jax.tree_util.tree_leaves_with_path(ours))
    flat_theirs = dict(jax.tree_util.tree_leaves_with_path(theirs))
    assert flat_ours.keys() == flat_theirs.keys()
    for path, value in flat_ours.items():
        if path[-1].key == "mean":
            np.testing.assert_allclose(value, flat_theirs[path], rtol=1e-4, atol=1e-5)


def test_converter_errors_name_the_key():
    ref, enc, _, _ = _pair("ecapa")
    sd = {k: v.detach().numpy() for k, v in ref.state_dict().items()}
    missing = dict(sd)
    del missing["layer2.convs.3.weight"]
    with pytest.raises(ValueError, match=r"'layer2\.convs\.3\.weight'.*missing"):
        convert.from_torch_state_dict(enc, missing, num_features=F)
    with pytest.raises(ValueError, match=r"'conv1\.weight' has shape .* expects \(5, 80, 16\)"):
        convert.from_torch_state_dict(enc, sd, num_features=80)
    with pytest.raises(ValueError, match="unsupported encoder"):
        convert.from_torch_state_dict(torch, sd)  # type: ignore[arg-type]
