"""Test-wide setup: 8 simulated CPU devices, as the brief asks, set before JAX is imported."""

import os

_flag = "--xla_force_host_platform_device_count=8"
if _flag not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " " + _flag).strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")
# TensorFlow (used only by TFDS preparation) must not grab all host threads or print noise.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
