"""Which runs to resume, and resuming them: a workflow's suite run from its last checkpoint, a
cut-off replay with the edit, seed and settings it was started with."""

from __future__ import annotations

from collections.abc import Sequence

from pydantic import BaseModel

from counterfact.graphs import RunSummary, resume_run
from counterfact.interventions._replay import ReplayResult, resume_replay
from counterfact.interventions._specs import InterventionError
from counterfact.store import RunRecord, TraceStore


class ResumedReplay(BaseModel):
    parent_run_id: str  # the run the replay was forked from
    replay: ReplayResult


class Resumed(BaseModel):
    """What resuming gave: the workflow runs finished, then the replays."""

    runs: list[RunSummary]
    replays: list[ResumedReplay]


def interrupted_runs(store: TraceStore) -> list[RunRecord]:
    """Runs left running (a crash, a lost database) that can be resumed: counterfact
    workflows' runs and replays. Whether one is still going is the caller's to know."""
    return [r for r in store.list_runs(status="running", limit=None)
            if "workflow_spec" in r.labels or r.parent_run_id is not None]


def resume_runs(store: TraceStore, refs: Sequence[str] | None = None, *, model: str | None = None) -> Resumed:
    """Resume the runs named (ids or unique prefixes), or with none named every interrupted one."""
    chosen = [store.get_run(ref) for ref in refs] if refs else interrupted_runs(store)
    if not chosen:
        raise InterventionError("no interrupted run to resume")
    return Resumed(
        runs=[resume_run(store, run.id, model=model) for run in chosen if run.parent_run_id is None],
        replays=[ResumedReplay(parent_run_id=run.parent_run_id, replay=resume_replay(store, run.id, model=model))
                 for run in chosen if run.parent_run_id is not None],
    )
