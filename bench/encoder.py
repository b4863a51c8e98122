"""Training-step throughput of ECAPA-TDNN: hamjax (JAX/Flax) beside PyTorch, on this CPU.

One training step = log-mel features of a batch of 2-s crops (32240 samples -> 202 frames,
computed inside the step in both frameworks) -> ECAPA-TDNN -> a linear softmax head over 5994
speakers -> cross-entropy -> backward -> Adam (lr 1e-3, L2 weight decay 2e-5, as the authors).
hamjax runs ``jax.jit(step, donate_argnums=0)`` with ``hamjax.frontend.logmel`` and
``hamjax.models.create_encoder("ecapa_tdnn", channels=C)``; PyTorch runs the transcription of the
authors' model in ``bench/torch_ecapa.py`` (eager, ``torch.set_num_threads(2)``).

Method: for each (C, batch) both steps are built and warmed up (JAX compiles), then timed in
interleaved rounds (PyTorch steps, then JAX steps, repeated) so that load changes on the shared
machine hit both alike; the figure is the median step time, reported as utterances/s. Before
timing (unless ``--no-check``) the PyTorch weights are loaded into the Flax model
(``hamjax.models.convert``) and eval-mode embeddings compared, so both frameworks are known to
compute the same function.

Caveat: on an oversubscribed machine (load average far above the core count) PyTorch's OpenMP
threads stall at every parallel region's barrier; compare ``--threads 1`` there.

Usage::

    python bench/encoder.py                       # the full table -> bench/RESULTS.md "encoder"
    python bench/encoder.py --channels 512 --batch-sizes 32 --rounds 2 --no-write
"""

from __future__ import annotations

import argparse
import gc
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import flax.linen as nn  # noqa: E402
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import optax  # noqa: E402
import torch  # noqa: E402
import torch_ecapa  # noqa: E402
from _results import machine_description, update_section  # noqa: E402

from hamjax import frontend, models  # noqa: E402

CROP = 32_240  # 200 frames + 240 samples, the authors' training crop
NUM_CLASSES = 5994  # VoxCeleb2 dev speakers
LR, WEIGHT_DECAY = 1e-3, 2e-5


def make_batch(batch: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    wav = (0.1 * rng.standard_normal((batch, CROP))).astype(np.float32)
    labels = rng.integers(0, NUM_CLASSES, batch).astype(np.int64)
    return wav, labels


# ----------------------------------------------------------------------------- JAX


def build_jax(
    channels: int, batch: int, seed: int, dtype: str = "float32", use_frame_mask: bool = True
):
    """Returns (step, state): ``step(state, wav, labels) -> (state, loss)``, jitted, donating.

    ``use_frame_mask``: pass the frontend's frame mask to the encoder, as the trainer does
    (masked BatchNorm / pooling statistics); False times the mask-free path that fixed-length
    crops permit.
    """
    encoder = models.create_encoder("ecapa_tdnn", channels=channels, dtype=dtype)
    head = nn.Dense(NUM_CLASSES, use_bias=False, name="head")
    k_enc, k_head = jax.random.split(jax.random.key(seed))
    feats = jnp.zeros((2, frontend.num_frames(CROP), 80))
    variables = encoder.init(k_enc, feats, None, train=False)
    params = {
        "encoder": variables["params"],
        "head": head.init(k_head, jnp.zeros((1, 192)))["params"],
    }
    # torch.optim.Adam(weight_decay=wd) adds wd * param to the gradient before Adam: same here.
    tx = optax.chain(optax.add_decayed_weights(WEIGHT_DECAY), optax.adam(LR))
    state = {
        "params": params,
        "batch_stats": variables["batch_stats"],
        "opt_state": tx.init(params),
    }

    def loss_fn(params, batch_stats, wav, labels):
        feats, frame_mask = frontend.logmel(wav)
        emb, updates = encoder.apply(
            {"params": params["encoder"], "batch_stats": batch_stats},
            feats,
            frame_mask if use_frame_mask else None,
            train=True,
            mutable=["batch_stats"],
        )
        logits = head.apply({"params": params["head"]}, emb)
        loss = optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()
        return loss, updates["batch_stats"]

    @jax.jit
    def step(state, wav, labels):
        grad_fn = jax.value_and_grad(loss_fn, has_aux=True)
        (loss, batch_stats), grads = grad_fn(state["params"], state["batch_stats"], wav, labels)
        updates, opt_state = tx.update(grads, state["opt_state"], state["params"])
        params = optax.apply_updates(state["params"], updates)
        return {"params": params, "batch_stats": batch_stats, "opt_state": opt_state}, loss

    step = jax.jit(step.__wrapped__, donate_argnums=0)
    return step, state


# ----------------------------------------------------------------------------- PyTorch


def build_torch(channels: int, seed: int):
    torch.manual_seed(seed)
    model = torch_ecapa.ECAPATDNN(channels).train()
    head = torch.nn.Linear(192, NUM_CLASSES, bias=False)
    opt = torch.optim.Adam(
        [*model.parameters(), *head.parameters()], lr=LR, weight_decay=WEIGHT_DECAY
    )

    def step(wav: torch.Tensor, labels: torch.Tensor) -> float:
        opt.zero_grad(set_to_none=True)
        loss = torch.nn.functional.cross_entropy(head(model(wav)), labels)
        loss.backward()
        opt.step()
        return loss.detach().item()

    return step, model


# ----------------------------------------------------------------------------- checks


def check_equivalence(channels: int = 512, batch: int = 2, seed: int = 0) -> float:
    """Max |embedding difference| between the PyTorch model and its weights run in hamjax."""
    from hamjax.models import convert

    torch.manual_seed(seed)
    model = torch_ecapa.ECAPATDNN(channels)
    # Non-trivial running statistics, so that eval-mode BatchNorm is really compared.
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm1d):
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 1.5)
    model.eval()
    wav, _ = make_batch(batch, seed)
    with torch.no_grad():
        want = model(torch.from_numpy(wav)).numpy()
    state = {k: v.numpy() for k, v in model.state_dict().items() if not k.startswith("features.")}
    encoder = models.create_encoder("ecapa_tdnn", channels=channels)
    variables = convert.from_torch_state_dict(encoder, state)
    embed = jax.jit(models.make_embed_fn(encoder, {"kind": "logmel"}))
    got = np.asarray(embed(variables, jnp.asarray(wav), None))
    return float(np.max(np.abs(got - want)) / np.max(np.abs(want)))


# ----------------------------------------------------------------------------- timing


def time_config(
    channels: int, batch: int, rounds: int, steps: int, seed: int, use_frame_mask: bool = True
) -> dict:
    wav_np, labels_np = make_batch(batch, seed)
    torch_step, model = build_torch(channels, seed)
    wav_t, labels_t = torch.from_numpy(wav_np), torch.from_numpy(labels_np)
    jax_step, state = build_jax(channels, batch, seed, use_frame_mask=use_frame_mask)
    wav_j, labels_j = jnp.asarray(wav_np), jnp.asarray(labels_np.astype(np.int32))

    t0 = time.perf_counter()
    state, loss = jax_step(state, wav_j, labels_j)
    loss.block_until_ready()
    compile_s = time.perf_counter() - t0
    torch_step(wav_t, labels_t)  # warm-up: allocator, oneDNN primitive caches

    times = {"torch": [], "jax": []}
    for _ in range(rounds):
        for _ in range(steps):
            t0 = time.perf_counter()
            torch_step(wav_t, labels_t)
            times["torch"].append(time.perf_counter() - t0)
        for _ in range(steps):
            t0 = time.perf_counter()
            state, loss = jax_step(state, wav_j, labels_j)
            loss.block_until_ready()
            times["jax"].append(time.perf_counter() - t0)
        print(
            f"  C={channels} B={batch}: torch {times['torch'][-1]:.2f}s "
            f"jax {times['jax'][-1]:.2f}s (loss {float(loss):.3f})",
            flush=True,
        )
    del state, model, jax_step, torch_step
    gc.collect()
    jax.clear_caches()
    med = {k: statistics.median(v) for k, v in times.items()}
    return {
        "channels": channels,
        "batch": batch,
        "n": len(times["jax"]),
        "compile_s": compile_s,
        "torch_s": med["torch"],
        "jax_s": med["jax"],
        "torch_all": times["torch"],
        "jax_all": times["jax"],
        "load": os.getloadavg()[0],
    }


def to_markdown(
    rows: list[dict], rel_err: float | None, command: str, frame_mask: bool = True
) -> str:
    lines = [
        "## encoder: ECAPA-TDNN training-step throughput, hamjax vs PyTorch (CPU)",
        "",
        f"Machine: {machine_description()}; torch {torch.__version__} with "
        f"`torch.set_num_threads({torch.get_num_threads()})`. The machine was **shared** with "
        "other engineers' test runs during the measurement (load average well above the core "
        "count), so absolute figures are noisy; variants were interleaved round by round and "
        "the table gives medians.",
        "",
        "Step: log-mel of B 2-s crops (32240 samples, 202 frames) computed inside the step -> "
        "ECAPA-TDNN -> linear head (5994 classes) -> cross-entropy -> backward -> Adam "
        "(lr 1e-3, L2 2e-5). float32. hamjax: one `jax.jit` step with donated state; PyTorch: "
        "eager, `bench/torch_ecapa.py`. The Flax encoder "
        + (
            "is given the frontend's frame mask (masked BatchNorm statistics, as the trainer)."
            if frame_mask
            else "runs without a frame mask (`--no-frame-mask`)."
        ),
        "",
        "Caveat: with the load average far above the core count, PyTorch's OpenMP threads "
        "stall at every parallel region's barrier, which penalises `set_num_threads(2)`; "
        "`--threads 1` gives PyTorch's other figure.",
        "",
    ]
    if rel_err is not None:
        lines += [
            f"Equivalence check: PyTorch weights loaded into the Flax model give eval embeddings "
            f"within {rel_err:.1e} (max abs difference / max abs embedding, C=512, B=2).",
            "",
        ]
    lines += [
        "| C | batch | steps timed | PyTorch utt/s | hamjax utt/s | hamjax / PyTorch | "
        "JAX compile + 1st step, s | load avg (1 min) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        tu, ju = r["batch"] / r["torch_s"], r["batch"] / r["jax_s"]
        lines.append(
            f"| {r['channels']} | {r['batch']} | {r['n']} each | {tu:.2f} | {ju:.2f} | "
            f"{ju / tu:.2f}x | {r['compile_s']:.0f} | {r['load']:.1f} |"
        )
    lines += ["", f"Command: `{command}`"]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--channels", type=int, nargs="+", default=[512, 1024])
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[32, 128])
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds per config")
    parser.add_argument("--steps", type=int, default=1, help="steps per framework per round")
    parser.add_argument(
        "--big-rounds", type=int, default=2, help="rounds for batch >= 128 (slow on 2 cores)"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--no-check", dest="check", action="store_false")
    parser.add_argument("--no-write", dest="write", action="store_false")
    parser.add_argument(
        "--no-frame-mask",
        dest="frame_mask",
        action="store_false",
        help="do not pass the frame mask to the Flax encoder (fixed-length crops allow it)",
    )
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    rel_err = None
    if args.check:
        rel_err = check_equivalence()
        print(f"equivalence: relative max |emb_jax - emb_torch| = {rel_err:.2e}", flush=True)
        if rel_err > 1e-3:
            raise SystemExit(f"hamjax and PyTorch ECAPA disagree: relative error {rel_err:.2e}")
    command = "python bench/encoder.py " + " ".join(argv if argv is not None else sys.argv[1:])
    command = command.strip()
    rows, md = [], ""
    # Cheap configurations first, so the table fills in order of cost.
    for batch in args.batch_sizes:
        for channels in args.channels:
            rounds = args.big_rounds if batch >= 128 else args.rounds
            steps = 1 if batch >= 128 else args.steps
            rows.append(time_config(channels, batch, rounds, steps, args.seed, args.frame_mask))
            r = rows[-1]
            print(
                f"C={channels} B={batch}: torch {batch / r['torch_s']:.2f} utt/s, "
                f"hamjax {batch / r['jax_s']:.2f} utt/s",
                flush=True,
            )
            # Written after every configuration: a long run that is stopped keeps what it did.
            md = to_markdown(rows, rel_err, command, args.frame_mask)
            if args.write:
                update_section("encoder", md)
    print(md)


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    main()
