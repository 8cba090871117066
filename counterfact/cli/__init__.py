"""The `counterfact` command: each command parses, calls the library, and prints.

One module per command group (`_runs`, `_formats`, `_workflows`, `_debug`, `_serve`, `_suite`, `_mcp`), their
shared options and helpers in `_common`. The commands are registered here, in one table: its
order is the order `counterfact --help` lists them in.
"""

from __future__ import annotations

import sys

import typer
from typer.exceptions import TyperException

from counterfact._errors import CounterfactError
from counterfact.cli import (
    _bench,
    _debug,
    _formats,
    _mcp,
    _runs,
    _serve,
    _suite,
    _workflows,
)

app = typer.Typer(
    help="Record multi-agent LLM runs as replayable traces, and debug failures by replay.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
db_app = typer.Typer(help="The trace database.", no_args_is_help=True)
runs_app = typer.Typer(help="Look at recorded runs.", no_args_is_help=True)
bench_app = typer.Typer(help="Benchmarks of the debugger against known truth.", no_args_is_help=True)
suite_app = typer.Typer(help="Regression suites made from runs.", no_args_is_help=True)
app.add_typer(db_app, name="db")
app.add_typer(runs_app, name="runs")
app.add_typer(bench_app, name="bench")
app.add_typer(suite_app, name="suite")

db_app.command("upgrade")(_runs.db_upgrade)
runs_app.command("list")(_runs.runs_list)
runs_app.command("show")(_runs.runs_show)
runs_app.command("tree")(_runs.runs_tree)
bench_app.command("faults")(_bench.bench_faults_command)
suite_app.command("from-runs")(_suite.from_runs_command)
suite_app.command("runs")(_suite.suite_runs_command)

app.command("verify")(_runs.verify)
app.command("redact")(_runs.redact)
app.command("import")(_formats.import_command)
app.command("export")(_formats.export_command)
app.command("run")(_workflows.run_command)
app.command("resume")(_workflows.resume_command)
app.command("demo")(_workflows.demo_command)
app.command("replay")(_debug.replay_command)
app.command("debug")(_debug.debug_command)
app.command("attribute")(_debug.attribute_command)
app.command("diff")(_runs.diff_command)
app.command("compare")(_suite.compare_command)
app.command("serve")(_serve.serve_command)
app.command("ui")(_serve.ui_command)
app.command("mcp")(_mcp.mcp_command)

__all__ = ["app", "main"]


def main() -> None:
    """Entry point: user errors (bad arguments included) become one line on stderr and exit
    code 1."""
    try:
        code = app(standalone_mode=False)
    except TyperException as exc:  # typer's own parsing: a bad or missing argument
        format_message = getattr(exc, "format_message", None)
        message = format_message() if callable(format_message) else str(exc)
        sys.stderr.write(f"error: {' '.join(message.replace('Value error, ', '').split())}\n")
        sys.exit(1)
    except typer.Abort:
        sys.stderr.write("aborted\n")
        sys.exit(130)
    except CounterfactError as exc:
        sys.stderr.write(f"error: {exc}\n")
        sys.exit(1)
    sys.exit(code if isinstance(code, int) else 0)
