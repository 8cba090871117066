"""`counterfact mcp` driven by the MCP SDK's own client over stdio, on a SQLite store of
recorded runs: every tool is called as a coding agent would call it, pages are followed to the
end, and user errors come back as one-line tool errors.

The judge of `attribute` is an OpenAI-compatible endpoint on loopback that always blames the
worker at step 1, so the test asks no real model."""

from __future__ import annotations

import json
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import anyio
import pytest
from mcp.client.session import ClientSession
from mcp.client.stdio import StdioServerParameters, stdio_client

from counterfact.graphs import record
from counterfact.store import TraceStore
from tests.graphs.sample_graphs import loop_graph, loop_input
from tests.interventions import apps

ROOT = Path(__file__).resolve().parents[2]
JUDGE_REPLY = "Step: 1\nAgent: worker\nReason: it added 2 and 2"


class _Judge(BaseHTTPRequestHandler):
    def _send(self, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:  # /models
        self._send({"object": "list", "data": [{"id": "judge", "object": "model", "created": 0, "owned_by": "test"}]})

    def do_POST(self) -> None:  # /chat/completions
        self.rfile.read(int(self.headers["Content-Length"]))
        self._send({
            "id": "c1", "object": "chat.completion", "created": 0, "model": "judge",
            "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": JUDGE_REPLY}}],
            "usage": {"prompt_tokens": 10, "completion_tokens": 10, "total_tokens": 20},
        })

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def judge_url() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Judge)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    server.shutdown()


def _store_with_runs(path: str) -> dict[str, str]:
    store = TraceStore.open(path)
    failed = record(apps.pipeline, store, check=apps.answer_is_5).invoke({"messages": [("user", "go")]}).run_id
    loop = record(loop_graph(), store, workflow="loop")
    short = loop.invoke(loop_input(1)).run_id
    long = loop.invoke({**loop_input(3), "messages": [("user", "count with me " + "x" * 30_000)]}).run_id
    store.close()
    return {"failed": failed, "short": short, "long": long}


async def _call(session: ClientSession, tool: str, **arguments: Any) -> Any:
    result = await session.call_tool(tool, arguments)
    assert not result.is_error, (tool, result.content)
    return result.structured_content


async def _error(session: ClientSession, tool: str, **arguments: Any) -> str:
    result = await session.call_tool(tool, arguments)
    assert result.is_error, (tool, result.structured_content)
    (content,) = result.content
    return content.text  # type: ignore[union-attr]


async def _session(db: str, judge_url: str) -> None:
    runs = _store_with_runs(db)
    params = StdioServerParameters(
        command=sys.executable, args=["-m", "counterfact.cli", "mcp", "--db", db], cwd=ROOT,
        env={"OPENAI_BASE_URL": judge_url, "OPENAI_API_KEY": "unused", "PYTHONPATH": str(ROOT)},
    )
    with anyio.fail_after(25):
        async with stdio_client(params) as (read, write), ClientSession(read, write) as session:
            await session.initialize()
            names = {t.name for t in (await session.list_tools()).tools}
            assert names == {"list_runs", "show_run", "show_step", "diff_runs", "replay", "start_debug",
                             "debug_report", "attribute"}

            # every run, one page at a time, newest first
            seen, cursor = [], None
            while True:
                page = await _call(session, "list_runs", limit=2, **({"cursor": cursor} if cursor else {}))
                seen += [r["id"] for r in page["runs"]]
                if (cursor := page["next_cursor"]) is None:
                    break
            assert seen == [runs["long"], runs["short"], runs["failed"]]
            found = await _call(session, "list_runs", status="failed")
            assert [r["id"] for r in found["runs"]] == [runs["failed"]]
            searched = await _call(session, "list_runs", text="count with me")
            assert {r["id"] for r in searched["runs"]} == {runs["short"], runs["long"]}

            # a run's steps in pages; its long input clipped in the overview, whole in show_step
            view = await _call(session, "show_run", run_id=runs["long"][:10], limit=3)
            assert [s["node"] for s in view["steps"]] == ["worker", "critic", "worker"]
            assert view["total_steps"] == 5 and view["next_offset"] == 3
            assert "more characters]" in view["run"]["task_input"]["messages"][0][1]
            rest = await _call(session, "show_run", run_id=runs["long"], offset=3, limit=3)
            assert [s["index"] for s in rest["steps"]] == [3, 4] and rest["next_offset"] is None
            text, offset = "", 0
            while offset is not None:
                page = await _call(session, "show_step", run_id=runs["long"], index=0, offset=offset)
                assert len(page["text"]) <= 20_000
                text, offset = text + page["text"], page["next_offset"]
            step = json.loads(text)
            assert step["node"] == "worker" and "x" * 30_000 in json.dumps(step)

            diff = await _call(session, "diff_runs", run_a=runs["short"], run_b=runs["failed"])
            assert diff["total"] == 2 and diff["rows"][0]["node_a"] == "worker" and diff["rows"][0]["node_b"] == "planner"

            verdict = await _call(session, "replay", run_id=runs["failed"], at="planner#0",
                                  edit={"kind": "message", "text": "compute 2+3"})
            assert verdict["verdict"] == "validated" and verdict["comparison"]["treatment_successes"] == 1

            started = await _call(session, "start_debug", run_id=runs["failed"], strategies=["rerun"], budget=4)
            while True:
                report = json.loads((await _call(session, "debug_report", session_id=started["session_id"][:8]))["text"])
                if report["status"] == "done":
                    break
                await anyio.sleep(0.2)
            assert report["run_id"] == runs["failed"] and report["strategies"] == ["rerun"]
            assert report["spent"]["replays"] >= 1 and report["notes"]

            blamed = await _call(session, "attribute", run_ids=[runs["failed"]], model="openai:judge")
            assert blamed["attributions"] == [{"run_id": runs["failed"], "agent": "worker", "step": 1,
                                               "reason": "it added 2 and 2", "errors": []}]

            assert "no run with id 'nosuch'" in await _error(session, "show_run", run_id="nosuch")
            assert "kind" in await _error(session, "replay", run_id=runs["failed"], at="0", edit={"kind": "nonsense"})
            assert "has no step 9" in await _error(session, "show_step", run_id=runs["short"], index=9)
            assert "not one a list_runs page gave" in await _error(session, "list_runs", cursor="garbage")
            assert "does not say where its graph comes from" in await _error(session, "start_debug", run_id=runs["short"])


def test_an_mcp_client_lists_shows_diffs_replays_debugs_and_attributes(sqlite_path: str, judge_url: str) -> None:
    started = time.perf_counter()
    anyio.run(_session, sqlite_path, judge_url)
    assert time.perf_counter() - started < 30
