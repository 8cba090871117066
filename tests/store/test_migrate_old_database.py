"""A database written at the first schema revision, opened by today's store: the store migrates
it, reads the old runs, steps, calls and payloads back through its public API, and their hash
chain still verifies, also once a step is appended to an old run under the new schema.

The old rows are written with SQL as revision 0001 had its tables (no search text, no call
placement columns), and their chain links are computed here from the chain's definition, not
by the store's writer.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from alembic import command

from counterfact.capture import ModelCallRecord
from counterfact.store import RunRecord, StepRecord, TraceStore, verify_run
from counterfact.store._migrate import alembic_config, current_revision, head_revision
from counterfact.store.schema import JsonType

QUESTION = [{"role": "user", "content": "Population of Ivesley?"}]
FIRST = "0001"
GENESIS = "0" * 64
MESSAGES = "application/vnd.counterfact.messages+json"
FINISHED, RUNNING = "a1" * 16, "b2" * 16
T0 = datetime(2026, 11, 26, 12, 0, 0, 250000)


def _table(name: str, *columns: tuple[str, Any]) -> sa.TableClause:
    return sa.table(name, *(sa.column(c, t) for c, t in columns))


# the tables as revision 0001 made them (only the columns written here)
RUNS = _table(
    "runs", ("id", sa.String), ("workflow", sa.String), ("workflow_hash", sa.String), ("task_input", JsonType),
    ("status", sa.String), ("outcome", JsonType), ("labels", JsonType), ("total_tokens", sa.Integer),
    ("total_latency_ms", sa.Float), ("source", sa.String), ("created_at", sa.DateTime),
    ("ended_at", sa.DateTime), ("step_count", sa.Integer), ("head_digest", sa.String),
)
STEPS = _table(
    "steps", ("id", sa.Integer), ("run_id", sa.String), ("index", sa.Integer), ("node", sa.String),
    ("agent", sa.String), ("invocation", sa.Integer), ("kind", sa.String), ("input_digest", sa.String),
    ("output_digest", sa.String), ("delta_digest", sa.String), ("checkpoint_before", sa.String),
    ("checkpoint_after", sa.String), ("task_id", sa.String), ("started_at", sa.DateTime),
    ("ended_at", sa.DateTime), ("error", sa.Text), ("digest", sa.String),
)
MODEL_CALLS = _table(
    "model_calls", ("step_id", sa.Integer), ("seq", sa.Integer), ("backend", sa.String), ("model", sa.String),
    ("params", JsonType), ("request_digest", sa.String), ("response_digest", sa.String),
    ("activations_digest", sa.String), ("finish_reason", sa.String), ("prompt_tokens", sa.Integer),
    ("completion_tokens", sa.Integer), ("latency_ms", sa.Float),
)
TOOL_CALLS = _table(
    "tool_calls", ("step_id", sa.Integer), ("seq", sa.Integer), ("name", sa.String),
    ("arguments_digest", sa.String), ("result_digest", sa.String), ("error", sa.Text), ("latency_ms", sa.Float),
)
BLOBS = _table(
    "blobs", ("digest", sa.String), ("media_type", sa.String), ("size", sa.Integer), ("data", sa.LargeBinary),
    ("redacted", sa.Boolean),
)
CHECKPOINTS = _table(
    "checkpoints", ("thread_id", sa.String), ("checkpoint_ns", sa.String), ("checkpoint_id", sa.String),
    ("parent_checkpoint_id", sa.String), ("run_id", sa.String), ("type", sa.String),
    ("checkpoint", sa.LargeBinary), ("metadata", JsonType),
)


def _canonical(value: Any) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class _OldRun:
    """Rows of one run as a writer at revision 0001 made them, with its chain."""

    def __init__(self, conn: sa.Connection, run_id: str, blobs: set[str]) -> None:
        self.conn, self.run_id, self.head, self.count = conn, run_id, GENESIS, 0
        self.blobs = blobs  # the digests stored so far, by any run

    def blob(self, value: Any, media_type: str = "application/json") -> str:
        data = _canonical(value)
        digest = _sha(data)
        if digest not in self.blobs:
            self.conn.execute(sa.insert(BLOBS), [{"digest": digest, "media_type": media_type, "size": len(data),
                                                  "data": data, "redacted": False}])
            self.blobs.add(digest)
        return digest

    def messages(self, messages: list[dict[str, Any]]) -> str:
        """A history as one manifest (fewer messages than a chunk holds)."""
        return self.blob({"prefix": None, "messages": [self.blob(m) for m in messages]}, MESSAGES)

    def step(self, node: str, *, input: list[dict[str, Any]], output: Any, checkpoint: str,
             model_calls: Sequence[dict[str, Any]] = (), tool_calls: Sequence[dict[str, Any]] = ()) -> None:
        started = T0.replace(second=self.count)
        fields = {
            "index": self.count, "node": node, "agent": node, "invocation": 0, "kind": "agent",
            "input_digest": self.messages(input), "output_digest": self.blob(output), "delta_digest": None,
            "checkpoint_before": checkpoint, "task_id": f"task-{self.count}",
            "started_at": started.isoformat(), "ended_at": started.replace(microsecond=900000).isoformat(),
            "error": None,
        }
        content = _canonical({**fields, "model_calls": list(model_calls), "tool_calls": list(tool_calls)})
        link = _sha(f"{self.head}:{_sha(content)}".encode())
        step_id = self.conn.execute(
            sa.insert(STEPS).returning(STEPS.c.id),
            {**fields, "run_id": self.run_id, "checkpoint_after": None, "digest": link,
             "started_at": started, "ended_at": started.replace(microsecond=900000)},
        ).scalar_one()
        if model_calls:
            self.conn.execute(sa.insert(MODEL_CALLS), [{**m, "step_id": step_id} for m in model_calls])
        if tool_calls:
            self.conn.execute(sa.insert(TOOL_CALLS), [{**t, "step_id": step_id} for t in tool_calls])
        self.head, self.count = link, self.count + 1


def _write_old_database(url: str) -> None:
    old = sa.create_engine(url)
    command.upgrade(alembic_config(old), FIRST)
    assert current_revision(old) == FIRST
    with old.begin() as conn:
        for run_id, status, ended in [(FINISHED, "succeeded", T0.replace(minute=5)), (RUNNING, "running", None)]:
            conn.execute(sa.insert(RUNS), [{
                "id": run_id, "workflow": "Town", "workflow_hash": "h" * 64,
                "task_input": {"question": "Population of Ivesley?"}, "status": status,
                "outcome": {"success": True, "score": 1.0, "milestones": ["lookup"], "detail": "1000"} if ended else None,
                "labels": {"team": "alpha", "seed": 7}, "total_tokens": 30 if ended else 0,
                "total_latency_ms": 12.5 if ended else 0.0, "source": "recorded", "created_at": T0,
                "ended_at": ended, "step_count": 0, "head_digest": "",
            }])
        blobs: set[str] = set()
        finished = _OldRun(conn, FINISHED, blobs)
        answer = {"role": "assistant", "content": "RESULT: 1000"}
        call = {
            "seq": 0, "backend": "openai", "model": "m", "params": {"temperature": 0.0},
            "request_digest": finished.messages(QUESTION), "response_digest": finished.blob(answer),
            "activations_digest": None, "finish_reason": "stop", "prompt_tokens": 20, "completion_tokens": 10,
            "latency_ms": 12.5,
        }
        finished.step("researcher", input=QUESTION, output={"lookup": "Ivesley"}, checkpoint="cp-0", tool_calls=[{
            "seq": 0, "name": "lookup", "arguments_digest": finished.blob({"town": "Ivesley"}),
            "result_digest": finished.blob("1000"), "error": None, "latency_ms": 3.0,
        }])
        finished.step("solver", input=[*QUESTION, {"role": "tool", "content": "1000"}], output=answer,
                      checkpoint="cp-1", model_calls=[call])
        conn.execute(sa.update(RUNS).where(RUNS.c.id == FINISHED).values(step_count=2, head_digest=finished.head))
        running = _OldRun(conn, RUNNING, blobs)
        running.step("researcher", input=QUESTION, output={"lookup": "Ivesley"}, checkpoint="cp-r0")
        # LangGraph's checkpoints of the finished run's own thread: each step's child
        conn.execute(sa.insert(CHECKPOINTS), [
            {"thread_id": FINISHED, "checkpoint_ns": "", "checkpoint_id": child, "parent_checkpoint_id": parent,
             "run_id": FINISHED, "type": "msgpack", "checkpoint": b"\x80", "metadata": {}}
            for parent, child in [("cp-0", "cp-1"), ("cp-1", "cp-2")]
        ])
    old.dispose()


def test_a_database_at_the_first_revision_reads_back_and_verifies(blank_url: str) -> None:
    _write_old_database(blank_url)
    with TraceStore(blank_url) as store:  # opening migrates to the newest revision
        assert store.schema_revision == head_revision() != FIRST

        run = store.get_run(FINISHED[:8])
        assert (run.id, run.workflow, run.status, run.step_count) == (FINISHED, "Town", "succeeded", 2)
        assert run.task_input == {"question": "Population of Ivesley?"} and run.labels == {"team": "alpha", "seed": 7}
        assert run.outcome is not None and (run.outcome.detail, run.outcome.milestones) == ("1000", ["lookup"])
        assert (run.total_tokens, run.total_latency_ms, run.created_at) == (30, 12.5, T0)
        # what later revisions added is filled for old runs: the text search, the label filters
        assert [r.id for r in store.list_runs(text="IVESLEY", status="succeeded")] == [FINISHED]
        assert {r.id for r in store.list_runs(labels={"team": "alpha"})} == {FINISHED, RUNNING}
        assert [r.id for r in store.list_runs(labels={"seed": "7"}, agent="solver")] == [FINISHED]

        researcher, solver = store.steps(FINISHED)
        assert [(s.index, s.node, s.agent, s.kind) for s in (researcher, solver)] == [
            (0, "researcher", "researcher", "agent"), (1, "solver", "solver", "agent")]
        assert researcher.input == [{"role": "user", "content": "Population of Ivesley?"}]
        assert solver.input is not None and solver.input[-1] == {"role": "tool", "content": "1000"}
        assert solver.output == {"role": "assistant", "content": "RESULT: 1000"}
        assert researcher.started_at == T0 and researcher.ended_at == T0.replace(microsecond=900000)
        # checkpoint_after is derived from the run's checkpoints, never written
        assert [(s.checkpoint_before, s.checkpoint_after) for s in (researcher, solver)] == [
            ("cp-0", "cp-1"), ("cp-1", "cp-2")]
        (tool,) = researcher.tool_calls
        assert (tool.name, tool.arguments, tool.result, tool.latency_ms) == ("lookup", {"town": "Ivesley"}, "1000", 3.0)
        assert tool.offset_ms is None and tool.agent is None and tool.handoff is None
        (model,) = solver.model_calls
        assert (model.backend, model.params, model.prompt_tokens, model.completion_tokens) == (
            "openai", {"temperature": 0.0}, 20, 10)
        assert model.request == researcher.input and model.response == solver.output and model.offset_ms is None
        assert store.get_value(_sha(_canonical(model.response))) == solver.output
        manifest = {"prefix": None, "messages": [_sha(_canonical(m)) for m in QUESTION]}
        assert store.get_value(_sha(_canonical(manifest))) == QUESTION
        light = store.steps(FINISHED, histories=False)
        assert light[1].input is None and light[1].model_calls[0].request == [] and light[0].tool_calls[0].result == "1000"

        report = verify_run(store, FINISHED)
        assert report.ok and report.steps == 2, report.problem

        # an old run still running goes on under the new schema: its chain continues
        writer = store.run_writer(RUNNING)
        step = StepRecord(node="solver", agent="solver", output={"content": "RESULT: 1000"}, model_calls=[
            ModelCallRecord(backend="openai", model="m", request=[{"role": "user", "content": "sum"}],
                            response={"content": "1000"}, offset_ms=4.0, agent="team/solver")])
        with store.begin() as conn:
            written = writer.write(conn, step)
        store.finish_run(RUNNING, "succeeded")
        assert written.index == 1 and store.steps(RUNNING)[1].model_calls[0].agent == "team/solver"
        assert verify_run(store, RUNNING).ok and verify_run(store, RUNNING).steps == 2

        # and a run written today sits beside them
        store.write_run(RunRecord(id="c3" * 16, workflow="Town"), [step])
        assert verify_run(store, "c3" * 16).ok
