"""hamjax.checkpointing on small real orbax checkpoints: atomic final/, restore errors."""

from __future__ import annotations

import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from hamjax import checkpointing


def _variables(scale: float) -> dict:
    return {
        "params": {"encoder": {"w": jnp.full((3, 4), scale)}, "head": {"c": jnp.ones(2) * scale}},
        "batch_stats": {"encoder": {"mean": jnp.zeros(4) + scale}},
    }


def _target(tree):
    device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=device), tree)


def _load_final(workdir, like):
    return checkpointing.load_variables(workdir, "final", _target(like))


def test_final_is_replaced_only_when_the_new_one_is_complete(tmp_path):
    old, new = _variables(1.0), _variables(2.0)
    checkpointing.save_final(tmp_path, old, {"step": 10})
    got, step = _load_final(tmp_path, old)
    assert step == 10
    np.testing.assert_array_equal(got["params"]["encoder"]["w"], old["params"]["encoder"]["w"])

    # Killed while writing the new model: final.new is incomplete (no info file yet). The old
    # model is still what loads, and the leftover is removed.
    checkpointing.save_final(tmp_path / "scratch", new, {"step": 20})
    shutil.copytree(tmp_path / "scratch" / "final", tmp_path / "final.new")
    (tmp_path / "final.new" / checkpointing.FINAL_INFO).unlink()
    got, step = _load_final(tmp_path, old)
    assert step == 10 and not (tmp_path / "final.new").exists()
    np.testing.assert_array_equal(got["params"]["head"]["c"], old["params"]["head"]["c"])

    # Killed between the two renames: final moved to final.old, final.new complete. The new
    # model is published on the next load.
    shutil.copytree(tmp_path / "scratch" / "final", tmp_path / "final.new")
    (tmp_path / "final").rename(tmp_path / "final.old")
    got, step = _load_final(tmp_path, old)
    assert step == 20 and not (tmp_path / "final.old").exists()
    np.testing.assert_array_equal(got["params"]["head"]["c"], new["params"]["head"]["c"])

    # A normal replacement leaves exactly final/ and its info.
    checkpointing.save_final(tmp_path, old, {"step": 30})
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("final")) == [
        "final",
        "final_info.json",
    ]
    assert checkpointing.final_info(tmp_path)["step"] == 30


def test_a_damaged_final_is_one_short_error_naming_it(tmp_path):
    checkpointing.save_final(tmp_path, _variables(1.0), {"step": 1})
    for p in (tmp_path / "final").rglob("*"):
        if p.is_file() and p.stat().st_size > 200 and "info" not in p.name:
            p.write_bytes(b"\0" * (p.stat().st_size // 3))
    with pytest.raises(checkpointing.CheckpointError) as info:
        _load_final(tmp_path, _variables(1.0))
    msg = str(info.value)
    assert f"cannot restore the checkpoint {tmp_path / 'final'}" in msg
    assert "What to do" in msg and msg.count("\n") < 3


def test_a_shape_mismatch_names_the_array_and_both_shapes(tmp_path):
    checkpointing.save_final(tmp_path, _variables(1.0), {"step": 1})
    other = _variables(1.0)
    other["params"]["encoder"]["w"] = jnp.zeros((5, 4))
    with pytest.raises(checkpointing.CheckpointError) as info:
        _load_final(tmp_path, other)
    msg = str(info.value)
    assert "['params']['encoder']['w']" in msg
    assert "expected shape (5, 4), found (3, 4)" in msg


def test_a_damaged_training_checkpoint_names_the_step(tmp_path):
    ckpt = checkpointing.Checkpointer(tmp_path / "checkpoints", async_save=False)
    state = {**_variables(1.0), "step": jnp.array(3)}
    ckpt.save(3, state, {"pos": 3})
    ckpt.close()
    for p in (tmp_path / "checkpoints" / "3" / "state").rglob("*"):
        if p.is_file() and p.stat().st_size > 200:
            p.write_bytes(p.read_bytes()[: p.stat().st_size // 2])
    ckpt = checkpointing.Checkpointer(tmp_path / "checkpoints", async_save=False)
    with pytest.raises(checkpointing.CheckpointError, match=r"checkpoints/3: .*What to do"):
        ckpt.restore(3, _target(state))
    ckpt.close()


def test_epoch_steps_count_the_last_step_as_an_epoch_end():
    assert checkpointing.epoch_steps([0, 3, 5, 6, 7], 3) == [3, 6]
    assert checkpointing.epoch_steps([0, 3, 5, 6, 7], 3, last_step=7) == [3, 6, 7]
