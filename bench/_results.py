"""Writes one benchmark's section of bench/RESULTS.md, atomically and under a file lock.

Each benchmark owns a section delimited by ``<!-- begin NAME -->`` / ``<!-- end NAME -->``;
re-running a benchmark replaces only its own section, so several benchmarks can share the file.
"""

from __future__ import annotations

import fcntl
import os
import platform
import re
import resource
import tempfile
from pathlib import Path

RESULTS = Path(__file__).with_name("RESULTS.md")
_HEADER = (
    "# hamjax benchmark results\n\n"
    "Each section is written by the script it names (`python bench/NAME.py`); re-run a script to\n"
    "refresh its section. CPU figures come from the 2-core development machine unless a section\n"
    "says otherwise; GPU figures name the device.\n"
)


def machine_description() -> str:
    """A one-line description of the host (CPU model, cores) and the JAX backend."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    try:
        import jax

        backend = f"jax {jax.__version__} on {jax.devices()[0].device_kind}"
    except Exception:  # noqa: BLE001 - jax is optional for this description
        backend = "jax unavailable"
    return f"{cpu}, {os.cpu_count()} logical cores; {backend}"


def update_section(name: str, markdown: str, path: Path = RESULTS) -> None:
    """Replaces (or appends) the section ``name`` of ``path`` with ``markdown``."""
    block = f"<!-- begin {name} -->\n{markdown.rstrip()}\n<!-- end {name} -->\n"
    lock_path = path.with_suffix(".lock")
    with open(lock_path, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        text = path.read_text() if path.exists() else _HEADER
        pattern = re.compile(
            rf"<!-- begin {re.escape(name)} -->.*?<!-- end {re.escape(name)} -->\n", re.S
        )
        if pattern.search(text):
            text = pattern.sub(lambda _: block, text)
        else:
            text = text.rstrip() + "\n\n" + block
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".RESULTS.", suffix=".tmp")
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(tmp, path)
    lock_path.unlink(missing_ok=True)


def cpu_seconds() -> float:
    """CPU seconds (user + system) of this process and its finished children."""
    total = 0.0
    for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN):
        r = resource.getrusage(who)
        total += r.ru_utime + r.ru_stime
    return total


def load_average() -> str:
    """The 1-minute load average, as text ("?" where /proc is absent)."""
    try:
        return open("/proc/loadavg").read().split()[0]
    except OSError:
        return "?"
