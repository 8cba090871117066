"""Verification: arms, statistics, verdicts and their storage; activation edits; bad input."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import func, select

from counterfact.agents import ChatModel, Completion
from counterfact.graphs import ModelPool, WorkflowRunner, load_suite, parse_workflow
from counterfact.interventions import (
    InterventionError,
    Replayer,
    compare,
    decide,
    load_intervention,
    newcombe,
    parse_intervention,
    run_tree,
    validating_looks,
    verify,
    wilson,
)
from counterfact.store import TraceStore
from counterfact.store.schema import Intervention, Run, Verdict

from .test_replay import SUITE, _recorded_trio


def test_wilson_and_newcombe_match_published_values() -> None:
    # Newcombe (1998), Statistics in Medicine 17:873, table II: 56/70 vs 48/80
    low, high = newcombe(56, 70, 48, 80)
    assert (round(low, 4), round(high, 4)) == (0.0524, 0.3339)
    assert tuple(round(x, 4) for x in wilson(0, 10)) == (0.0, 0.2775)


def test_paired_exact_test() -> None:
    c = compare([True] * 6, [False] * 6)
    assert c.treatment_only == 6 and c.p_value == pytest.approx(1 / 64)
    assert compare([True, False], [True, False]).p_value == 1.0


def test_decision_rules() -> None:
    fixed = compare([True] * 3, [False] * 3)
    assert decide(fixed, True, True, "", None, 0.5)[0] == "validated"
    assert decide(compare([False] * 3, [False] * 3), True, True, "", None, 0.5)[0] == "refuted"
    assert decide(compare([True] * 3, [True] * 3), True, True, "", None, 0.5)[0] == "inconclusive"
    assert decide(fixed, True, False, "nope", None, 0.5) == ("inconclusive", "the edit was not applied (nope)")
    # sampled arms: 8/10 vs 1/10 is decided, 1/3 vs 0/3 is not, 0/12 vs 0/12 refutes
    sampled = compare([True] * 8 + [False] * 2, [True] + [False] * 9)
    assert decide(sampled, False, True, "", None, 0.5)[0] == "validated"
    assert decide(compare([True, False, False], [False] * 3), False, True, "", None, 0.5)[0] == "inconclusive"
    assert decide(compare([False] * 12, [False] * 12), False, True, "", None, 0.5)[0] == "refuted"
    # a sequential verification holds its final test to its looks' split level too: with 8
    # pairs it looks at 6, 7 and 8 (0.05 / 3 each), and 6/8 vs 0/8 (p = 0.016) passes the
    # unsplit 5% level and 0.05 / 3, while 5/8 vs 0/8 (p = 0.031) passes 5% only
    assert validating_looks(8) == (6, pytest.approx(0.05 / 3))
    borderline = compare([True] * 5 + [False] * 3, [False] * 8)
    assert 0.05 / 3 < borderline.p_value < 0.05
    assert decide(borderline, False, True, "", None, 0.5)[0] == "validated"
    assert decide(borderline, False, True, "", None, 0.5, alpha=0.05 / 3)[0] == "inconclusive"


def test_sequential_looks_are_those_that_can_reach_significance() -> None:
    """With n pairs the smallest p is 0.5^n: looks before one could pass are not counted, so a
    short verification keeps its power (6 pairs: one look, at 0.05), and a longer one splits
    alpha over its possible looks only."""
    assert [validating_looks(t) for t in (1, 4, 5, 6)] == [(1, 0.05), (4, 0.05), (5, 0.05), (6, 0.05)]
    assert validating_looks(7) == (6, 0.025)
    for pairs in range(1, 30):
        first, level = validating_looks(pairs)
        looks = pairs - first + 1
        assert level == pytest.approx(0.05 / looks)  # Bonferroni over the looks taken
        if pairs >= 5:
            assert compare([True] * first, [False] * first).p_value < level  # each look can pass


class CoinModel(ChatModel):
    """Answers right with probability 0.1, drawn from the request's seed: a sampling model."""

    backend = "scripted"

    def __init__(self) -> None:
        self.seeds: list[int | None] = []

    @property
    def name(self) -> str:
        return "coin"

    def complete(self, request):  # type: ignore[no-untyped-def]
        seed = request.settings.seed
        self.seeds.append(seed)
        right = random.Random(seed).random() < 0.1
        return Completion(text="FINAL ANSWER: 999" if right else "FINAL ANSWER: 1")


def _coin_run(store: TraceStore) -> tuple[CoinModel, Replayer, object]:
    """A sampled one-agent run of the coin model, and a prefix edit that always repairs it."""
    model = CoinModel()
    spec = parse_workflow(
        {"name": "coin", "topology": "pipeline", "model": "coin",
         "agents": [{"name": "a", "role": "A.", "settings": {"temperature": 0.8}}]}
    )
    pool = ModelPool("coin", {"coin": model})
    run_id = WorkflowRunner(spec, store, pool).run(load_suite(SUITE).task("wrong"), seed=123).run_id
    replayer = Replayer(store, run_id, pool=pool)
    return model, replayer, replayer.compile(parse_intervention({"kind": "prefix", "text": "FINAL ANSWER: 999."}), 0)


def test_sampled_arms_use_common_seeds(sqlite_path: str) -> None:
    store = TraceStore.open(sqlite_path)
    model, replayer, plan = _coin_run(store)
    report = verify(replayer, plan, pairs=10, seed=40)
    assert not report.deterministic
    seeds = model.seeds[1:]
    assert len(seeds) == 20 and len(set(seeds)) == 10  # each seed used once in each arm
    # pair i of both arms replays with seed 40+i: the arms' seeds pair up, arm by arm
    assert [r.seed for r in report.treatment] == [r.seed for r in report.control] == list(range(40, 50))
    for treated, control in zip(report.treatment, report.control, strict=True):
        stored = (store.get_run(treated.run_id).labels, store.get_run(control.run_id).labels)
        assert stored[0]["replay_seed"] == stored[1]["replay_seed"] == treated.seed
    assert report.comparison.treatment_rate == 1.0 and report.comparison.control_rate < 0.5
    assert report.verdict == "validated", report.reason
    assert report.comparison.p_value < 0.05


def test_a_sequential_verification_of_six_pairs_can_validate(sqlite_path: str) -> None:
    """6 pairs of a sampled run where the edit always repairs it: validated at the last look
    (alpha split over all six looks made this impossible: 0.5^6 > 0.05/6)."""
    store = TraceStore.open(sqlite_path)
    _, replayer, plan = _coin_run(store)
    report = verify(replayer, plan, pairs=6, seed=40, sequential=True)
    assert report.comparison.n == 6 and report.comparison.treatment_rate == 1.0
    assert report.verdict == "validated", report.reason


def test_verify_stores_intervention_replays_and_verdict(sqlite_path: str) -> None:
    store = TraceStore.open(sqlite_path)
    run_id, _, pool = _recorded_trio(store, "wrong")
    replayer = Replayer(store, run_id, pool=pool)
    plan = replayer.compile(parse_intervention({"kind": "message", "text": "RESULT: 999"}), "solver#0")
    report = verify(replayer, plan, pairs=2)
    assert report.verdict == "validated" and report.deterministic and report.applied
    assert [r.answer for r in report.treatment] == ["999", "999"]
    assert [r.answer for r in report.control] == ["1000", "1000"]
    with store.engine.connect() as conn:
        stored = conn.execute(select(Verdict.__table__)).mappings().one()
        assert stored["verdict"] == "validated" and stored["stats"]["comparison"]["n"] == 2
        spec = conn.execute(select(Intervention.spec)).scalar_one()
        assert spec["edits"][0]["text"] == "RESULT: 999"
        treated = conn.execute(
            select(func.count()).select_from(Run).where(Run.intervention_id == stored["intervention_id"])
        ).scalar_one()
    assert treated == 2
    tree = run_tree(store, run_id)
    assert "validated" in str(tree.children[0].label)
    assert len(tree.children[0].children) == 4


def test_activation_edit_on_a_local_model_is_checked_by_kl_and_hooks(sqlite_path: str, tiny: object) -> None:
    store = TraceStore.open(sqlite_path)
    pool = ModelPool("tiny", {"tiny": tiny})  # type: ignore[dict-item]
    spec = parse_workflow(
        {"name": "t", "topology": "pipeline", "model": "tiny",
         "agents": [{"name": "a", "role": "A.", "settings": {"max_tokens": 5}},
                    {"name": "b", "role": "B.", "settings": {"max_tokens": 5}}]}
    )
    run_id = WorkflowRunner(spec, store, pool).run(load_suite(SUITE).task("sum")).run_id
    replayer = Replayer(store, run_id, pool=pool)
    vector = np.random.default_rng(0).normal(size=64).tolist()
    edit = {"kind": "activation", "layers": [1], "positions": "all", "operation": "add",
            "strength": 8.0, "vector": {"values": vector}}
    report = verify(replayer, replayer.compile(parse_intervention(edit), "b#0"), pairs=1)
    assert report.applied and report.edit_hits and report.edit_hits > 0
    assert report.kl_divergence is not None and report.kl_divergence > 1e-3
    treated = store.steps(report.treatment[0].run_id)[1]
    control = store.steps(report.control[0].run_id)[1]
    assert treated.model_calls[0].params["activation_edits"][0]["layer"] == [1]
    assert treated.output["content"] != control.output["content"]


def test_bad_edits_fail_before_any_replay_and_write_nothing(sqlite_path: str, tiny: object, tmp_path: Path) -> None:
    store = TraceStore.open(sqlite_path)
    run_id, _, pool = _recorded_trio(store, "wrong")
    replayer = Replayer(store, run_id, pool=pool)
    runs_before = len(store.list_runs(limit=None))
    message = parse_intervention({"kind": "message", "text": "x"})
    cases = [
        (lambda: replayer.compile(message, 7), "step 7 is out of range: the run has steps 0..2"),
        (lambda: replayer.compile(message, "nobody#0"), "no node nobody #0"),
        (lambda: replayer.compile(message, "agent:ghost#1"), "no agent ghost #1"),
        (lambda: replayer.compile(parse_intervention(
            {"kind": "activation", "layers": [0], "vector": {"values": [1.0]}}), 0),
         "remote black-box model"),
    ]
    for call, expected in cases:
        with pytest.raises(InterventionError, match=expected):
            call()
    bad = tmp_path / "edit.yaml"
    bad.write_text("kind: message\ntext: [unclosed\n")
    with pytest.raises(InterventionError, match="edit.yaml: does not parse"):
        load_intervention(bad)
    bad.write_text("kind: teleport\n")
    with pytest.raises(InterventionError, match="edit.yaml: .*kind"):
        load_intervention(bad)
    # on a local model: a layer out of range, a vector of the wrong size
    local = ModelPool("tiny", {"tiny": tiny})  # type: ignore[dict-item]
    spec = parse_workflow({"name": "t", "topology": "pipeline", "model": "tiny",
                           "agents": [{"name": "a", "role": "A.", "settings": {"max_tokens": 3}}]})
    local_run = WorkflowRunner(spec, store, local).run(load_suite(SUITE).task("sum")).run_id
    runs_before = len(store.list_runs(limit=None))
    local_replayer = Replayer(store, local_run, pool=local)
    for edit, expected in [
        ({"layers": [9], "vector": {"values": [0.0] * 64}}, "layer"),
        ({"layers": [0], "vector": {"values": [0.0] * 3}}, "size|width|64"),
    ]:
        with pytest.raises(InterventionError, match=expected):
            local_replayer.compile(parse_intervention({"kind": "activation", **edit}), 0)
    assert len(store.list_runs(limit=None)) == runs_before  # nothing written
