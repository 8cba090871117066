"""`counterfact import phoenix://HOST:PORT/PROJECT` against a real Arize Phoenix on loopback (the
one tests/otel starts): runs exported to Phoenix come back over its REST API with their ids,
steps, model and tool calls; a second import skips them; a wrong project is one clear line."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from counterfact.formats import FormatError, export_otlp, import_paths
from counterfact.graphs import record
from counterfact.store import TraceStore

from ..interventions import apps
from ..otel.conftest import Phoenix, phoenix  # noqa: F401  (the fixture that starts Phoenix)

pytestmark = pytest.mark.phoenix


def test_runs_in_phoenix_are_imported_over_its_rest_api(tmp_path: Path, phoenix: Phoenix) -> None:  # noqa: F811
    recorded = TraceStore.open(str(tmp_path / "recorded.db"))
    record(apps.tool_agent(), recorded, ref="tests.interventions.apps:tool_agent").invoke({"messages": [("user", "add 2 and 2")]})
    record(apps.pipeline, recorded, check=apps.answer_is_5).invoke({"messages": [("user", "go")]})
    runs = [r.id for r in recorded.list_runs(limit=None)]
    _, sent = export_otlp(recorded, runs, phoenix.url, project="cf-import")
    phoenix.wait_for_spans("cf-import", sent)
    url = phoenix.url.replace("http://", "phoenix://") + "/cf-import"

    fresh = TraceStore.open(str(tmp_path / "fresh.db"))
    [report] = import_paths(fresh, [url])
    assert report.format == "phoenix" and sorted(report.run_ids) == sorted(runs)
    for run_id in runs:
        before, after = recorded.steps(run_id), fresh.steps(run_id)
        assert [(s.node, s.kind) for s in after] == [(s.node, s.kind) for s in before]
        assert [len(s.model_calls) for s in after] == [len(s.model_calls) for s in before]
        assert [[c.name for c in s.tool_calls] for s in after] == [[c.name for c in s.tool_calls] for s in before]
        assert fresh.get_run(run_id).status == recorded.get_run(run_id).status
    [again] = import_paths(fresh, [url])
    assert again.run_ids == [] and len(again.skipped) == len(runs)

    cli = subprocess.run([sys.executable, "-m", "counterfact.cli", "import", url.removesuffix("cf-import") + "nothing-here",
                          "--db", str(tmp_path / "cli.db")], capture_output=True, text=True, check=False)
    assert cli.returncode == 1 and len(cli.stderr.strip().splitlines()) == 1, cli.stderr
    assert "nothing-here" in cli.stderr and "nothing was imported" in cli.stderr


def test_an_unreachable_phoenix_is_one_line_naming_the_url(tmp_path: Path) -> None:
    with pytest.raises(FormatError, match=r"^phoenix://127\.0\.0\.1:9/p: cannot reach Phoenix .*nothing was imported$"):
        import_paths(TraceStore.open(str(tmp_path / "s.db")), ["phoenix://127.0.0.1:9/p"])
