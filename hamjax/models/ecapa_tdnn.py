"""ECAPA-TDNN as the HAM-Softmax authors build it (TaoRuijie/ECAPA-TDNN style), in Flax Linen.

Reference: B. Desplanques, J. Thienpondt, K. Demuynck, "ECAPA-TDNN: Emphasized Channel
Attention, Propagation and Aggregation in TDNN Based Speaker Verification", Interspeech 2020;
the authors' PyTorch code (a TaoRuijie/ECAPA-TDNN derivative) fixes the details below.

Layout is NWC (``[B, T, C]``); submodule names equal the PyTorch attribute names
(``conv1``, ``layer1.convs_0`` ...) so the authors' checkpoints can be ported
(:func:`hamjax.models.convert.ecapa_from_torch`).

Architecture (``C`` = ``channels``, input ``[B, T, 80]``)::

    x  = BN(ReLU(Conv1d(80 -> C, k5)))                       [B, T, C]
    x1 = SERes2Block(x,           d=2)                       [B, T, C]
    x2 = SERes2Block(x + x1,      d=3)                       (dense-sum inputs)
    x3 = SERes2Block(x + x1 + x2, d=4)
    h  = ReLU(Conv1d(concat(x1, x2, x3): 3C -> 1536, k1))    [B, T, 1536]
    g  = concat(h, mean_t h, std_t h)                        [B, T, 4608]  (global context)
    w  = softmax_t(Conv1d(256 -> 1536)(Tanh(BN(ReLU(Conv1d(4608 -> 256)(g))))))
    mu = sum_t w h,  sg = sqrt(max(sum_t w h^2 - mu^2, 1e-4))
    e  = BN(Dense(3072 -> 192)(BN(concat(mu, sg))))          [B, 192]

Parameter count (weights + biases + BN affine; BN running statistics excluded), per layer, for
``C = 1024`` (width ``w = C / 8 = 128``)::

    conv1 80*1024*5 + 1024 = 410,624      bn1  2,048
    block: conv1 1024^2 + 1024 = 1,049,600, bn1 2,048, 7 convs 7*(128*128*3 + 128) = 344,960,
           7 bns 7*256 = 1,792, conv3 1,049,600, bn3 2,048,
           SE (1024*128 + 128) + (128*1024 + 1024) = 263,296          -> 2,713,344  (x 3)
    layer4 3072*1536 + 1536 = 4,720,128
    attention (4608*256 + 256) + 512 + (256*1536 + 1536) = 1,575,168
    bn5 6,144   fc6 3072*192 + 192 = 590,016   bn6 384
    total 15,444,544   (C = 512: 6,978,176)

Both equal the PyTorch transcription's figures exactly. The "14.7M" often quoted for C = 1024
(ECAPA paper, METHOD.md) is the original design's 128-channel attention bottleneck:
``attention_channels=128`` gives 15,444,544 - 786,816 = 14,657,728 here.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from hamjax.models import layers


class SEModule(nn.Module):
    """Squeeze-excitation over time: ``x * sigmoid(W2 ReLU(W1 mean_t x))``; ``[B, T, C]``.

    The authors' variant has no BatchNorm in the bottleneck and biases on both 1x1 convs. The
    squeeze is a mean over valid frames only.

    Attributes:
      bottleneck: hidden width of the excitation MLP (128).
      dtype: compute dtype.
    """

    bottleneck: int = 128
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, mask: jax.Array | None) -> jax.Array:
        c = x.shape[-1]
        s = layers.masked_mean(x.astype(jnp.float32), mask)[:, None, :].astype(self.dtype)
        s = nn.relu(layers.conv(s, self.bottleneck, (1,), name="conv1", dtype=self.dtype))
        s = nn.sigmoid(layers.conv(s, c, (1,), name="conv2", dtype=self.dtype))
        return x * s


class SERes2Block(nn.Module):
    """SE-Res2Net block ("Bottle2neck" in the authors' code); ``[B, T, C] -> [B, T, C]``.

    ``out = SE(BN(ReLU(Conv1x1(res2(BN(ReLU(Conv1x1(x)))))))) + x`` where ``res2`` splits the
    channels into ``scale`` groups of width ``w = C // scale`` and runs
    ``y_i = BN_i(ReLU(Conv_k,d(s_i + y_{i-1})))`` for ``i < scale - 1`` (``y_{-1} = 0``), passing
    the last group through unchanged.

    Attributes:
      channels: ``C`` (input and output channels).
      kernel_size: the res2 convolutions' kernel (3).
      dilation: their dilation (2, 3, 4 in the three blocks).
      scale: number of res2 groups (8).
      se_bottleneck: SE hidden width (128).
      dtype: compute dtype.
    """

    channels: int
    kernel_size: int = 3
    dilation: int = 1
    scale: int = 8
    se_bottleneck: int = 128
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, mask: jax.Array | None, *, train: bool) -> jax.Array:
        width = self.channels // self.scale
        bmask = layers.expand_mask(mask, 3)
        dt = self.dtype

        def bn(h: jax.Array, name: str) -> jax.Array:
            # Re-zero the padded frames after every BN: its shift makes them non-zero, and the
            # next dilated conv must see zeros beyond the end exactly as when the utterance is
            # alone.
            h = layers.batch_norm(h, train=train, name=name, mask=bmask, dtype=dt)
            return layers.apply_mask(h, mask)

        out = bn(nn.relu(layers.conv(x, width * self.scale, (1,), name="conv1", dtype=dt)), "bn1")
        spx = jnp.split(out, self.scale, axis=-1)
        ys = []
        sp = None
        for i in range(self.scale - 1):
            sp = spx[i] if i == 0 else sp + spx[i]
            sp = layers.conv(
                sp, width, (self.kernel_size,), dilation=self.dilation, name=f"convs_{i}", dtype=dt
            )
            sp = bn(nn.relu(sp), f"bns_{i}")
            ys.append(sp)
        ys.append(spx[self.scale - 1])
        out = jnp.concatenate(ys, axis=-1)
        out = bn(nn.relu(layers.conv(out, self.channels, (1,), name="conv3", dtype=dt)), "bn3")
        out = SEModule(self.se_bottleneck, dtype=dt, name="se")(out, mask)
        return out + x


class AttentiveStatsPool(nn.Module):
    """Attentive statistics pooling with global context, the authors' variant; ``[B,T,D]->[B,2D]``.

    .. math::
        g_t = [h_t; \\mu; \\sigma],\\quad
        a_t = \\mathrm{softmax}_t\\big(V \\tanh(\\mathrm{BN}(\\mathrm{ReLU}(W g_t + b))) + k\\big),
        \\quad \\tilde\\mu = \\sum_t a_t h_t,\\quad
        \\tilde\\sigma = \\sqrt{\\max(\\textstyle\\sum_t a_t h_t^2 - \\tilde\\mu^2, 10^{-4})}

    with ``mu``/``sigma`` the plain mean and unbiased std over valid frames (variance clamped at
    1e-4, as ``torch.var(...).clamp(min=1e-4)``), the softmax (per channel) over valid frames
    only. The statistics are computed in float32 also under bfloat16 compute.

    Attributes:
      attention_channels: bottleneck width (256).
      dtype: compute dtype of the attention convolutions.
    """

    attention_channels: int = 256
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, h: jax.Array, mask: jax.Array | None, *, train: bool) -> jax.Array:
        d = h.shape[2]
        h32 = h.astype(jnp.float32)
        mean, std = layers.masked_mean_std(h32, mask, ddof=1, min_var=1e-4)
        # conv1 over g = [h; mean; std] (4608 channels) without materialising g: the context
        # rows are one [B, 2D] product broadcast over time, 2/3 of the layer's work saved.
        a = layers.ConcatPointwiseConv(self.attention_channels, dtype=self.dtype, name="conv1")(
            [h, mean[:, None], std[:, None]]
        )
        a = nn.relu(a)
        a = layers.batch_norm(
            a, train=train, name="bn", mask=layers.expand_mask(mask, 3), dtype=self.dtype
        )
        a = jnp.tanh(a)
        a = layers.conv(a, d, (1,), name="conv2", dtype=self.dtype)
        w = layers.masked_softmax(a, mask)  # [B, T, D] float32, 0 on padded frames
        mu = jnp.sum(w * h32, axis=1)
        sg = jnp.sqrt(jnp.maximum(jnp.sum(w * h32 * h32, axis=1) - mu * mu, 1e-4))
        return jnp.concatenate([mu, sg], axis=-1)


class ECAPATDNN(nn.Module):
    """The authors' ECAPA-TDNN speaker encoder; ``feats [B, T, F] -> embeddings [B, E]``.

    Attributes:
      channels: ``C``, width of the SE-Res2 blocks (512 or 1024 in the paper's presets).
      embed_dim: embedding size ``E`` (192).
      scale: res2 groups per block (8); ``channels`` must be at least ``scale``.
      kernel_size: res2 kernel (3).
      dilations: one SE-Res2 block per dilation ((2, 3, 4)).
      se_bottleneck: SE hidden width (128).
      mfa_channels: output of the multi-layer feature aggregation conv (1536).
      attention_channels: attentive pooling bottleneck (256).
      dtype: compute dtype (float32 or bfloat16); parameters are float32 and the embeddings are
        returned in float32 either way.
    """

    channels: int = 1024
    embed_dim: int = 192
    scale: int = 8
    kernel_size: int = 3
    dilations: Sequence[int] = (2, 3, 4)
    se_bottleneck: int = 128
    mfa_channels: int = 1536
    attention_channels: int = 256
    dtype: Any = jnp.float32

    def __post_init__(self) -> None:
        layers.check_positive_ints(
            "ecapa_tdnn",
            channels=self.channels,
            embed_dim=self.embed_dim,
            scale=self.scale,
            kernel_size=self.kernel_size,
            se_bottleneck=self.se_bottleneck,
            mfa_channels=self.mfa_channels,
            attention_channels=self.attention_channels,
        )
        if self.channels < self.scale:
            raise ValueError(
                f"ecapa_tdnn: channels={self.channels} must be >= scale={self.scale} "
                "(each res2 group needs at least one channel)"
            )
        if self.kernel_size % 2 != 1:
            raise ValueError(
                f"ecapa_tdnn: kernel_size={self.kernel_size} must be odd (symmetric padding)"
            )
        if len(self.dilations) == 0 or any(
            not isinstance(d, int) or isinstance(d, bool) or d <= 0 for d in self.dilations
        ):
            raise ValueError(
                f"ecapa_tdnn: dilations={tuple(self.dilations)!r} must be a non-empty sequence "
                "of positive ints"
            )
        layers.check_dtype("ecapa_tdnn", self.dtype)
        super().__post_init__()

    @nn.compact
    def __call__(
        self, feats: jax.Array, frame_mask: jax.Array | None = None, *, train: bool = False
    ) -> jax.Array:
        """Embeds a batch of feature sequences.

        Args:
          feats: ``[B, T, F]`` features (e.g. 80 log-mel bins).
          frame_mask: boolean ``[B, T]``, True on valid frames (a prefix); None = all valid.
          train: BatchNorm uses (and updates, with ``mutable=["batch_stats"]``) batch statistics
            over valid frames when True, running averages when False.

        Returns:
          ``[B, embed_dim]`` float32 embeddings (after the final BatchNorm).
        """
        lengths = layers.check_features(feats, frame_mask, "ecapa_tdnn")
        mask = layers.prefix_mask(lengths, feats.shape[1])
        dt = jnp.dtype(self.dtype)
        bmask = layers.expand_mask(mask, 3)

        x = layers.apply_mask(feats.astype(dt), mask)
        x = nn.relu(layers.conv(x, self.channels, (5,), name="conv1", dtype=dt))
        x = layers.batch_norm(x, train=train, name="bn1", mask=bmask, dtype=dt)
        x = layers.apply_mask(x, mask)

        outs = []
        acc = x
        for i, d in enumerate(self.dilations):
            y = SERes2Block(
                self.channels,
                kernel_size=self.kernel_size,
                dilation=d,
                scale=self.scale,
                se_bottleneck=self.se_bottleneck,
                dtype=dt,
                name=f"layer{i + 1}",
            )(acc, mask, train=train)
            outs.append(y)
            acc = acc + y  # dense-sum input of the next block: x + x1 + ... + x_i

        h = jnp.concatenate(outs, axis=-1)
        h = nn.relu(layers.conv(h, self.mfa_channels, (1,), name="layer4", dtype=dt))
        stats = AttentiveStatsPool(self.attention_channels, dtype=dt, name="attention")(
            h, mask, train=train
        )
        e = layers.batch_norm(stats, train=train, name="bn5", dtype=dt)
        e = layers.dense(e, self.embed_dim, name="fc6", dtype=dt)
        e = layers.batch_norm(e, train=train, name="bn6", dtype=dt)
        return e.astype(jnp.float32)
