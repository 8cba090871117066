"""Mutation testing of the modules where a silent mistake changes a verdict or lets someone in.

Each target is a module and the test files that guard it. For each, mutmut 3 mutates the module
in a scratch copy of the repository (`git archive HEAD`, so only committed code is measured),
runs those tests against every mutant, and this script prints the share of mutants killed per
module, against the 90 % target, and the surviving mutants with their diffs.

    .venv/bin/python scripts/mutation.py                    # every target
    .venv/bin/python scripts/mutation.py stats verify       # some, by name
    .venv/bin/python scripts/mutation.py --list             # the targets and their tests
    .venv/bin/python scripts/mutation.py --worktree chain   # uncommitted tests included

Not part of the default test run: a target takes from seconds (stats) to many minutes.
mutmut is in the `mutation` extra (`pip install -e '.[mutation]'`).
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
from pathlib import Path

from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parents[1]
TARGET_SCORE = 0.90
CAUGHT = ("killed", "timeout")

# name -> (module, the tests that guard it)
TARGETS: dict[str, tuple[str, list[str]]] = {
    "stats": ("counterfact/interventions/_stats.py",
              ["tests/interventions/test_stats.py", "tests/guards/test_sign_test.py"]),
    "verify": ("counterfact/interventions/_verify.py",
               ["tests/interventions/test_verdict_rules.py", "tests/interventions/test_verify.py",
                "tests/guards/test_verdicts.py"]),
    "applied": ("counterfact/interventions/_applied.py",
                ["tests/interventions/test_applied.py", "tests/guards/test_verdicts.py"]),
    "recorder": ("counterfact/graphs/_recorder.py",
                 ["tests/graphs/test_recorder.py", "tests/guards/test_capture_guards.py",
                  "tests/multiagent/test_record_replay.py", "tests/graphs/test_recorded_steps.py"]),
    "node-wrapper": ("counterfact/graphs/_wrapping.py",
                     ["tests/graphs/test_recorder.py", "tests/guards/test_capture_guards.py",
                      "tests/multiagent/test_record_replay.py", "tests/graphs/test_recorded_steps.py"]),
    "capture": ("counterfact/capture/_capture.py",
                ["tests/capture/test_capture.py", "tests/guards/test_capture_guards.py",
                 "tests/capture/test_captured_calls.py"]),
    "instrument": ("counterfact/capture/_instrument.py",
                   ["tests/capture/test_capture.py", "tests/guards/test_instrumented_clients.py",
                    "tests/capture/test_instrumented_openai.py"]),
    "viewer-security": ("counterfact/ui/_security.py",
                        ["tests/ui/test_security.py", "tests/guards/test_viewer_token.py", "tests/ui/test_api.py"]),
    "chain": ("counterfact/store/_audit.py",
              ["tests/store/test_audit.py", "tests/fuzz/test_chain.py",
               "tests/store/test_chain_links.py"]),
}

# Tests left out of a target: they load a model for seconds before they start, which mutmut's
# time limit does not count, so every mutant they cover would "time out" and be counted caught
# whether a test catches it or not. What they check of the module is checked on stand-ins.
DESELECTED: dict[str, list[str]] = {
    "verify": [
        "tests/interventions/test_verify.py::test_activation_edit_on_a_local_model_is_checked_by_kl_and_hooks",
        "tests/interventions/test_verify.py::test_bad_edits_fail_before_any_replay_and_write_nothing",
    ],
}

console = Console(stderr=True)


def mutmut(workdir: Path, *args: str) -> str:
    done = subprocess.run([sys.executable, "-m", "mutmut", *args], cwd=workdir, capture_output=True, text=True)
    return done.stdout


def copy_repository(work: Path, *, worktree: bool) -> None:
    """The committed tree (default), or the work tree with its uncommitted and new files."""
    if worktree:
        listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                                cwd=ROOT, capture_output=True, check=True).stdout
        files = [f for f in listed.split(b"\0") if f and (ROOT / f.decode()).is_file()]
        archive = subprocess.run(["tar", "-c", "--null", "-T", "-"], cwd=ROOT, input=b"\0".join(files),
                                 capture_output=True, check=True).stdout
    else:
        archive = subprocess.run(["git", "archive", "HEAD"], cwd=ROOT, capture_output=True, check=True).stdout
    subprocess.run(["tar", "-x", "-C", str(work)], input=archive, check=True)


def measure(name: str, *, worktree: bool = False, children: int | None = None) -> tuple[int, int, list[tuple[str, str]]]:
    """(mutants, killed, [(surviving mutant, its diff)]) of one target."""
    module, tests = TARGETS[name]
    with tempfile.TemporaryDirectory(prefix=f"mutation-{name}-") as scratch:
        work = Path(scratch)
        copy_repository(work, worktree=worktree)
        with (work / "pyproject.toml").open("a") as config:
            config.write(
                "\n[tool.mutmut]\n"
                f"source_paths = [{module!r}]\n"
                f"pytest_add_cli_args_test_selection = {tests!r}\n"
                f"pytest_add_cli_args = {[a for t in DESELECTED.get(name, []) for a in ('--deselect', t)]!r}\n"
                'also_copy = ["counterfact", "examples", "tests", "benchmarks"]\n'
                # A mutant that hangs (waits on a lock, a socket, a thread) burns no CPU: bound
                # it by wall time too, at a few times what its tests take unmutated.
                "timeout_multiplier = 4.0\n"
                # and a floor for setup the measured durations leave out (fixtures, imports)
                "timeout_constant = 10.0\n"
            )
        console.print(f"[bold]{name}[/bold]: mutating {module} against {', '.join(tests)}")
        mutmut(work, "run", *(["--max-children", str(children)] if children else []))
        statuses = re.findall(r"^\s*(\S+): (\w[\w ]*)$", mutmut(work, "results", "--all", "true"), re.M)
        # a mutant that makes its tests time out is caught too (mutmut counts it so in its score);
        # every other one lived: it survived, or no selected test ran its code ("no tests")
        survivors = [(f"{m} ({status})", mutmut(work, "show", m)) for m, status in statuses if status not in CAUGHT]
    killed = sum(status in CAUGHT for _, status in statuses)
    return len(statuses), killed, survivors


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("targets", nargs="*", help=f"among {', '.join(TARGETS)} (default: all)")
    parser.add_argument("--list", action="store_true", help="print the targets and their tests")
    parser.add_argument("--worktree", action="store_true",
                        help="measure the work tree, uncommitted changes included (default: HEAD)")
    parser.add_argument("--children", type=int, help="mutants tested at once (default: one per core)")
    args = parser.parse_args()
    if args.list:
        for name, (module, tests) in TARGETS.items():
            print(f"{name:16} {module}  <- {', '.join(tests)}")
        return
    unknown = [t for t in args.targets if t not in TARGETS]
    if unknown:
        parser.error(f"no target {', '.join(unknown)}; choose among {', '.join(TARGETS)}")
    table = Table(title="mutation testing (mutmut 3)")
    for column in ("target", "module", "mutants", "killed", "score", f"target {TARGET_SCORE:.0%}"):
        table.add_column(column)
    for name in args.targets or list(TARGETS):
        total, killed, survivors = measure(name, worktree=args.worktree, children=args.children)
        score = killed / total if total else 0.0
        # said as each target ends, so a run cut off later keeps what was measured
        console.print(f"{name}: {killed}/{total} mutants killed ({score:.1%})")
        for mutant, diff in survivors:
            print(f"\n--- surviving: {mutant}\n{diff.strip()}", flush=True)
        table.add_row(name, TARGETS[name][0], str(total), str(killed), f"{score:.1%}",
                      "met" if score >= TARGET_SCORE else "MISSED")
    Console(width=160).print(table)


if __name__ == "__main__":
    main()
