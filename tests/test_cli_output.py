"""What CLI commands print when their output is not a terminal (piped, or captured)."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from counterfact.cli import app
from counterfact.graphs import record
from counterfact.store import TraceStore
from tests.graphs.sample_graphs import loop_graph, loop_input

LONG_WORKFLOW = "a-very-long-workflow-name-for-the-nightly-regression-suite-of-research-agents"


def _runs(path: str, count: int, workflow: str = "loop") -> list[str]:
    store = TraceStore.open(path)
    graph = record(loop_graph(), store, workflow=workflow)
    ids = [graph.invoke(loop_input(2)).run_id for _ in range(count)]
    store.close()
    return ids


def test_runs_list_piped_prints_the_whole_table_uncut(sqlite_path: str) -> None:
    (run_id,) = _runs(sqlite_path, 1, workflow=LONG_WORKFLOW)
    # COLUMNS as a terminal 80 wide would set it: piped output must not be cut to it either
    result = CliRunner().invoke(app, ["runs", "list", "--db", sqlite_path], env={"COLUMNS": "80"})
    assert result.exit_code == 0, result.output
    assert "…" not in result.output, result.output
    row = next(line for line in result.output.splitlines() if LONG_WORKFLOW in line)
    assert run_id[:12] in row and "succeeded" in row and "│" in row.rstrip()[-1:], result.output


def test_export_otlp_json_says_how_many_runs_and_spans_it_wrote_where(tmp_path: Path, sqlite_path: str) -> None:
    ids = _runs(sqlite_path, 2)
    out = tmp_path / "spans.jsonl"
    result = CliRunner().invoke(app, ["export", *ids, "--otlp-json", str(out), "--db", sqlite_path])
    assert result.exit_code == 0, result.output
    spans = sum(
        len(scope["spans"])
        for line in out.read_text().splitlines()
        for resource in json.loads(line)["resourceSpans"]
        for scope in resource["scopeSpans"]
    )
    assert spans > 2
    assert f"exported 2 runs as {spans} spans to {out}" in result.output, result.output
