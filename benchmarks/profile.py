"""Optional sampling profiles (py-spy) of the processes under test, summarized as the top functions.

`--profile DIR` on `benchmarks.run` records each measured phase into DIR as py-spy's collapsed stacks
(`*.txt`, loadable by speedscope or flamegraph.pl) plus a `*.top.txt` summary: the functions with the most
samples on top of the stack (self) and anywhere in it (inclusive).
"""

from __future__ import annotations

import contextlib
import shutil
import signal
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

TOP = 30


def py_spy() -> str | None:
    beside = Path(sys.executable).parent / "py-spy"
    return str(beside) if beside.exists() else shutil.which("py-spy")


@contextlib.contextmanager
def profiled(pids: dict[str, int], directory: Path | None, phase: str) -> Iterator[None]:
    """Record every process in `pids` (label → pid) while the block runs; nothing when `directory` is None."""
    binary = py_spy()
    if directory is None or binary is None:
        yield
        return
    directory.mkdir(parents=True, exist_ok=True)
    recorders = {}
    for label, pid in pids.items():
        path = directory / f"{phase}-{label}.txt"
        recorders[path] = subprocess.Popen(
            [binary, "record", "--pid", str(pid), "--format", "raw", "--nonblocking", "-o", str(path)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
    try:
        yield
    finally:
        for path, recorder in recorders.items():
            recorder.send_signal(signal.SIGINT)
            try:
                recorder.wait(60)
            except subprocess.TimeoutExpired:
                recorder.kill()
                recorder.wait(10)
            if path.exists():
                path.with_suffix(".top.txt").write_text(summarize(path))


def summarize(path: Path, top: int = TOP) -> str:
    """Self and inclusive sample counts per function from py-spy's collapsed stacks."""
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [_short(frame) for frame in stack.split(";")[1:]]  # the first frame is the thread
        if not frames:
            continue
        total += count
        own[frames[-1]] += count
        for frame in set(frames):
            inclusive[frame] += count
    lines = [f"{path.name}: {total} samples", "", "self %  function"]
    lines += [f"{100 * n / total:6.1f}  {name}" for name, n in own.most_common(top)]
    lines += ["", "incl %  function"]
    lines += [f"{100 * n / total:6.1f}  {name}" for name, n in inclusive.most_common(top)]
    return "\n".join(lines) + "\n"


def _short(frame: str) -> str:
    """`func (path/to/module.py:123)` → `func (module.py)`; line numbers would split one function."""
    name, _, where = frame.partition(" (")
    file = where.rsplit(":", 1)[0].rstrip(")")
    parts = Path(file).parts
    return f"{name} ({'/'.join(parts[-2:])})" if parts else name
