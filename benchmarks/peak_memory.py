"""Peak memory (and wall time) of the demo, over its whole process tree.

Run: .venv/bin/python benchmarks/peak_memory.py [--limit N] [--json FILE]

Cases, each in a fresh subprocess so nothing this script imported counts:
- `demo, first run`: `counterfact demo` with an empty model cache, so it converts the GGUF file
  (target <= 1.2 GB);
- `demo, cached`: the same command again, loading the converted cache (target <= 1.0 GB);
- `load + generate`: a process that only loads the embedded model (cached) and generates 32
  tokens (the figure this script used to report alone; target <= 1.5 GB).

The peak is the largest sum of RSS over the process and all its descendants, sampled every
50 ms with psutil (shared pages of a forked child count twice: an upper bound). The ru_maxrss
that the kernel reports for the waited-for child (its largest single process) is a cross-check:
sampling can miss a short spike, ru_maxrss cannot, but it does not add processes up.
The model cache and the demo's database live in a temporary folder, removed afterwards.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import psutil

LOAD_ONLY = """
from counterfact.agents import load_embedded
from counterfact.agents import ChatMessage, GenerationSettings, ModelRequest
model = load_embedded()
assert load_embedded() is model
model.complete(ModelRequest(messages=[ChatMessage(role="user", content="Explain why the sky is blue.")],
                            settings=GenerationSettings(max_tokens=32)))
"""

MB = 1024 * 1024
SAMPLE_S = 0.05


@dataclass
class Row:
    case: str
    peak_mb: float  # RSS summed over the process tree, sampled
    maxrss_mb: float  # ru_maxrss of the child, from the kernel
    seconds: float
    target_mb: float

    @property
    def verdict(self) -> str:
        return "met" if max(self.peak_mb, self.maxrss_mb) <= self.target_mb else "MISSED"


def _tree_rss(root: psutil.Process) -> int:
    """RSS of `root` and its descendants now, in bytes (processes that just ended count 0)."""
    total = 0
    try:
        processes = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return 0
    for proc in processes:
        try:
            total += proc.memory_info().rss
        except psutil.NoSuchProcess:
            pass
    return total


def measure(case: str, argv: list[str], env: dict[str, str], target_mb: float, log: Path) -> Row:
    """Run `argv` to its end, sampling its process tree; its output goes to `log`."""
    started = time.perf_counter()
    with log.open("w") as out:
        child = subprocess.Popen(argv, env=env, stdout=out, stderr=subprocess.STDOUT)
    peak = 0
    done = threading.Event()

    def sample() -> None:
        nonlocal peak
        root = psutil.Process(child.pid)
        while not done.is_set():
            peak = max(peak, _tree_rss(root))
            time.sleep(SAMPLE_S)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    # wait4 gives this child's own rusage, not the sum over every child this script ran.
    _, status, usage = os.wait4(child.pid, 0)
    child.returncode = os.waitstatus_to_exitcode(status)
    seconds = time.perf_counter() - started
    done.set()
    sampler.join()
    if child.returncode != 0:
        raise SystemExit(f"{case}: exit code {child.returncode}, see {log}")
    return Row(case, peak / MB, usage.ru_maxrss / 1024, seconds, target_mb)  # ru_maxrss is KiB


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--limit", type=int, help="only the first N tasks of the demo suite")
    parser.add_argument("--json", type=Path, help="also write the rows here")
    parser.add_argument("--keep", type=Path, help="keep each case's output and database in this folder")
    args = parser.parse_args()
    counterfact = str(Path(sys.executable).with_name("counterfact"))
    with tempfile.TemporaryDirectory(prefix="cf-peak-") as tmp:
        out = args.keep or Path(tmp)
        out.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, "COUNTERFACT_CACHE": str(Path(tmp) / "cache"), "COLUMNS": "200"}
        demo = [counterfact, "demo", *(["--limit", str(args.limit)] if args.limit else [])]
        rows = [
            measure("demo, first run", [*demo, "--db", f"{out}/first.db"], env, 1200, out / "first.log"),
            measure("demo, cached", [*demo, "--db", f"{out}/cached.db"], env, 1000, out / "cached.log"),
            measure("load + generate", [sys.executable, "-c", LOAD_ONLY], env, 1536, out / "load.log"),
        ]
    print(f"{'case':<18} {'peak MB':>8} {'maxrss MB':>10} {'seconds':>8} {'target MB':>10}  verdict")
    for r in rows:
        print(f"{r.case:<18} {r.peak_mb:>8.0f} {r.maxrss_mb:>10.0f} {r.seconds:>8.1f} {r.target_mb:>10.0f}  {r.verdict}")
    if args.json:
        args.json.write_text(json.dumps([asdict(r) for r in rows], indent=2))


if __name__ == "__main__":
    main()
