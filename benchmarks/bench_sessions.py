"""Time per decided hypothesis, side by side: the debugger as it is against the debugger at an
earlier commit, on the same failed runs of the demo suite, on the embedded model.

Each arm is `bench_debugger.py --configs CONFIG` run from its own checkout (the earlier one a
git worktree of REV): each runs the demo suite at the same seed into a store of its own (the
same tasks fail in both: the script checks) and debugs the first N failed runs with the same
strategies and budget. The table gives hypotheses, decided ones, replays and seconds per decided
hypothesis, and the ratio of the arms.

By default the arms run one after the other and each debugs one run at a time, so a session's
seconds are what a user waits for `counterfact debug RUN`: with sessions (or arms) at once, each
session's wall time also holds its neighbours' work, and the sum over sessions counts the
machine several times over. `--at-once` runs both arms together, each with
`--sessions-at-once` sessions (bench_debugger's default is 4), as this script first did.

    .venv/bin/python benchmarks/bench_sessions.py [--before 04ba3d1] [--config grounded] [--runs 4] [--budget 24]
        [--tasks N] [--at-once] [--sessions-at-once 1] [--fill-batches]

04ba3d1 is the commit at which the target was set: 114 s per decided hypothesis on the demo,
measured with `grounded` (the strategy every demo failure gets hypotheses from) and budget 24.
Run from the repository root; the worktree is removed afterwards.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml
from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parents[1]


def arm(checkout: Path, out: Path, args: argparse.Namespace, extra: list[str]) -> subprocess.Popen[bytes]:
    """One arm: the checkout's own bench_debugger on the checkout's own code."""
    command = [sys.executable, "benchmarks/bench_debugger.py", "--configs", args.config, "--runs", str(args.runs),
               "--budget", str(args.budget), "--db", str(out.with_suffix(".db")), "--json", str(out),
               "--suite", str(args.suite_file), "--concurrency", str(args.sessions_at_once), *extra]
    log = out.with_suffix(".log").open("wb")
    return subprocess.Popen(command, cwd=checkout, stdout=log, stderr=subprocess.STDOUT,
                            env={"PYTHONPATH": str(checkout), "PATH": "/usr/bin:/bin", "HOME": str(Path.home())})


def failed_tasks(db: Path) -> list[str]:
    """The tasks whose original run failed, in the arm's store (read with sqlite3: the two arms'
    schemas may differ)."""
    import sqlite3

    with sqlite3.connect(db) as conn:
        rows = conn.execute("select labels from runs where parent_run_id is null and status = 'failed'").fetchall()
    return sorted(str(json.loads(labels).get("task_id")) for (labels,) in rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", default="04ba3d1", help="the earlier commit")
    parser.add_argument("--config", default="grounded", help="a strategy, or all (bench_debugger's --configs)")
    parser.add_argument("--runs", type=int, default=4, help="failed runs debugged per arm")
    parser.add_argument("--budget", type=int, default=24, help="replays per debug session")
    parser.add_argument("--tasks", type=int, default=None, help="only the demo suite's first N tasks")
    parser.add_argument("--at-once", action="store_true", help="run both arms at the same time")
    parser.add_argument("--sessions-at-once", type=int, default=1, help="debug sessions at once in each arm")
    parser.add_argument("--fill-batches", action="store_true", help="the now arm debugs with --fill-batches")
    args = parser.parse_args()
    console = Console(width=160)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        suite = yaml.safe_load((ROOT / "counterfact/graphs/data/demo_suite.yaml").read_text())
        suite["tasks"] = suite["tasks"][: args.tasks]
        args.suite_file = work / "suite.yaml"
        args.suite_file.write_text(yaml.safe_dump(suite, sort_keys=False))
        before = work / "before"
        subprocess.run(["git", "worktree", "add", "--detach", str(before), args.before], cwd=ROOT, check=True,
                       capture_output=True)
        live = before / "counterfact/formats/_otel_live.py"
        if not live.exists():  # the venv's entry point names where live export lives now
            live.write_text("from counterfact.formats._otel import live_export  # noqa: F401\n")
        try:
            started = time.perf_counter()
            now = "now, --fill-batches" if args.fill_batches else "now"
            arms = {f"before ({args.before})": (before, work / "before.json", []),
                    now: (ROOT, work / "now.json", ["--fill-batches"] if args.fill_batches else [])}
            codes: dict[str, int] = {}
            if args.at_once:
                running = {name: arm(checkout, out, args, extra) for name, (checkout, out, extra) in arms.items()}
                with console.status("both arms running (each logs to its own file)"):
                    codes = {name: process.wait() for name, process in running.items()}
            else:
                for name, (checkout, out, extra) in arms.items():
                    with console.status(f"arm {name} running (it logs to {out.with_suffix('.log')})"):
                        codes[name] = arm(checkout, out, args, extra).wait()
            for name, code in codes.items():
                if code:
                    log = arms[name][1].with_suffix(".log").read_text()[-2000:]
                    raise SystemExit(f"arm {name} failed (exit {code}):\n{log}")
            figures = {name: json.loads(out.read_text())[args.config] for name, (_, out, _) in arms.items()}
            tasks = {name: failed_tasks(out.with_suffix(".db")) for name, (_, out, _) in arms.items()}
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", str(before)], cwd=ROOT, check=False,
                           capture_output=True)
    same = len({tuple(t) for t in tasks.values()}) == 1
    table = Table(title=f"debug sessions on the demo's failed runs, {args.config}, budget {args.budget}, "
                        f"{'both arms at once' if args.at_once else 'one arm after the other'}, "
                        f"{args.sessions_at_once} session(s) at once ({time.perf_counter() - started:.0f} s)")
    for column in ("arm", "runs", "repaired", "hypotheses", "decided", "replays / decided", "s / decided"):
        table.add_column(column, justify="left" if column == "arm" else "right")
    per: dict[str, float] = {}
    for name, r in figures.items():
        per[name] = r["seconds"] / r["decided"] if r["decided"] else float("nan")
        table.add_row(name, str(r["runs"]), str(r["repaired"]), str(r["hypotheses"]), str(r["decided"]),
                      f"{r['replays'] / r['decided']:.1f}" if r["decided"] else "-", f"{per[name]:.1f}")
    console.print(table)
    first, last = per.values()
    console.print(f"now / before, seconds per decided hypothesis: {last / first:.2f} (target <= 0.33)")
    console.print("the same tasks failed in both arms" if same else f"the arms' failed tasks differ: {tasks}")


if __name__ == "__main__":
    main()
