"""ResNet speaker encoders as WeSpeaker builds them (wespeaker/models/resnet.py), in Flax Linen.

Reference: K. He et al., "Deep Residual Learning for Image Recognition", CVPR 2016, with
WeSpeaker's changes for speaker verification: a 3x3 stem of ``m_channels`` = 32 channels, no
max-pooling, widths ``32, 64, 128, 256``, temporal statistics pooling (TSTP) and one linear
embedding layer (``two_emb_layer=False``).

The feature map is an image ``[B, T, F, 1]`` (NHWC; WeSpeaker's is ``[B, 1, F, T]``); strides 2
in stages 2-4 halve both time and frequency, so 80 bins become 10. TSTP takes the mean and the
unbiased standard deviation over (valid) time of the ``[C, F']`` map, flattened channel-major as
WeSpeaker does, so the ``seg_1`` weights are interchangeable.

Parameter count of ``resnet34`` (80 bins, 256-d embedding; weights + BN affine, convs have no
bias)::

    conv1 3*3*1*32 = 288, bn1 64                                          352
    layer1 3 x (2*(9*32*32) + 2*64)                                    55,680
    layer2 (9*32*64 + 9*64*64 + 2*128 + 32*64 + 128) + 3 x (2*9*64*64 + 256)        279,680
    layer3 (9*64*128 + 9*128*128 + 512 + 64*128 + 256) + 5 x (2*9*128*128 + 512)  1,707,264
    layer4 (9*128*256 + 9*256*256 + 1024 + 128*256 + 512) + 2 x (2*9*256*256 + 1024) 3,280,384
    seg_1 (2 * 256 * 10) * 256 + 256                                1,310,976
    total 6,634,336   (WeSpeaker's script prints 6.634336 M)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from hamjax.models import layers


class BasicBlock(nn.Module):
    """ResNet basic block; ``[B, T, F, C_in] -> [B, T', F', planes]`` (``T' = ceil(T/stride)``).

    ``y = ReLU(BN(Conv3x3(ReLU(BN(Conv3x3_s(x))))) + shortcut(x))`` with a 1x1 strided conv + BN
    shortcut when the shape changes. Padded frames are zeroed after each ReLU so the next 3x3
    conv sees zeros beyond the utterance's end.

    Attributes:
      planes: output channels.
      stride: stride of the first conv and of the shortcut (both axes).
      dtype: compute dtype.
    """

    planes: int
    stride: int = 1
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(
        self, x: jax.Array, lengths: jax.Array | None, *, train: bool
    ) -> tuple[jax.Array, jax.Array | None]:
        dt = self.dtype
        out_lengths = layers.downsample_lengths(lengths, self.stride)
        out_mask = layers.prefix_mask(out_lengths, (x.shape[1] - 1) // self.stride + 1)
        bmask = layers.expand_mask(out_mask, 4)
        s = (self.stride, self.stride)

        out = layers.conv(x, self.planes, (3, 3), strides=s, use_bias=False, name="conv1", dtype=dt)
        out = nn.relu(layers.batch_norm(out, train=train, name="bn1", mask=bmask, dtype=dt))
        out = layers.apply_mask(out, out_mask)
        out = layers.conv(out, self.planes, (3, 3), use_bias=False, name="conv2", dtype=dt)
        out = layers.batch_norm(out, train=train, name="bn2", mask=bmask, dtype=dt)
        if self.stride != 1 or x.shape[-1] != self.planes:
            sc = layers.conv(
                x, self.planes, (1, 1), strides=s, use_bias=False, name="shortcut_conv", dtype=dt
            )
            sc = layers.batch_norm(sc, train=train, name="shortcut_bn", mask=bmask, dtype=dt)
        else:
            sc = x
        out = layers.apply_mask(nn.relu(out + sc), out_mask)
        return out, out_lengths


class ResNet(nn.Module):
    """WeSpeaker's ResNet with TSTP pooling; ``feats [B, T, F] -> embeddings [B, E]``.

    Attributes:
      num_blocks: basic blocks per stage ((3, 4, 6, 3) for ResNet34).
      m_channels: stem width; stage ``i`` has ``m_channels * 2**i`` channels (32).
      embed_dim: embedding size ``E`` (256).
      dtype: compute dtype (float32 or bfloat16); parameters float32, embeddings float32.
    """

    num_blocks: Sequence[int] = (3, 4, 6, 3)
    m_channels: int = 32
    embed_dim: int = 256
    dtype: Any = jnp.float32

    def __post_init__(self) -> None:
        layers.check_positive_ints("resnet", m_channels=self.m_channels, embed_dim=self.embed_dim)
        if len(self.num_blocks) != 4 or any(
            not isinstance(n, int) or isinstance(n, bool) or n <= 0 for n in self.num_blocks
        ):
            raise ValueError(
                f"resnet: num_blocks={tuple(self.num_blocks)!r} must be four positive ints"
            )
        layers.check_dtype("resnet", self.dtype)
        super().__post_init__()

    @nn.compact
    def __call__(
        self, feats: jax.Array, frame_mask: jax.Array | None = None, *, train: bool = False
    ) -> jax.Array:
        """Embeds a batch of feature sequences.

        Args:
          feats: ``[B, T, F]`` features (80 fbank / log-mel bins in WeSpeaker's recipes).
          frame_mask: boolean ``[B, T]``, True on valid frames (a prefix); None = all valid.
          train: BatchNorm batch statistics over valid frames (True) or running averages.

        Returns:
          ``[B, embed_dim]`` float32 embeddings (``seg_1`` output; WeSpeaker has no final BN).
        """
        lengths = layers.check_features(feats, frame_mask, "resnet")
        dt = jnp.dtype(self.dtype)
        mask = layers.prefix_mask(lengths, feats.shape[1])

        x = layers.apply_mask(feats.astype(dt), mask)[..., None]  # [B, T, F, 1]
        x = layers.conv(x, self.m_channels, (3, 3), use_bias=False, name="conv1", dtype=dt)
        x = nn.relu(
            layers.batch_norm(
                x, train=train, name="bn1", mask=layers.expand_mask(mask, 4), dtype=dt
            )
        )
        x = layers.apply_mask(x, mask)

        for stage, n in enumerate(self.num_blocks):
            planes = self.m_channels * 2**stage
            for j in range(n):
                stride = 2 if (stage > 0 and j == 0) else 1
                x, lengths = BasicBlock(
                    planes, stride=stride, dtype=dt, name=f"layer{stage + 1}_{j}"
                )(x, lengths, train=train)

        # TSTP: statistics over time of every (channel, frequency) cell, flattened channel-major
        # like WeSpeaker's [B, C, F', T'] -> [B, C * F'] (torch.var is unbiased; eps 1e-8).
        mask = layers.prefix_mask(lengths, x.shape[1])
        mean, std = layers.masked_mean_std(x, mask, ddof=1, eps=1e-8)  # [B, F', C] each
        b = x.shape[0]
        mean = jnp.swapaxes(mean, 1, 2).reshape(b, -1)
        std = jnp.swapaxes(std, 1, 2).reshape(b, -1)
        stats = jnp.concatenate([mean, std], axis=-1)
        e = layers.dense(stats.astype(dt), self.embed_dim, name="seg_1", dtype=dt)
        return e.astype(jnp.float32)


def resnet34(**kwargs: Any) -> ResNet:
    """WeSpeaker ResNet34: BasicBlock x (3, 4, 6, 3), 32 base channels, 256-d embedding."""
    kwargs.setdefault("embed_dim", 256)
    return ResNet(num_blocks=(3, 4, 6, 3), **kwargs)


def resnet18(**kwargs: Any) -> ResNet:
    """WeSpeaker ResNet18: BasicBlock x (2, 2, 2, 2), 32 base channels, 256-d embedding."""
    kwargs.setdefault("embed_dim", 256)
    return ResNet(num_blocks=(2, 2, 2, 2), **kwargs)
