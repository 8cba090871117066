"""Repeated requests: answered from the memo, or by joining the row that decodes them, with the
tokens a fresh decode gives; requests whose result is more than tokens are never shared."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

from counterfact.agents import ChatMessage, GenerationSettings, LocalModel, ModelRequest
from counterfact.agents._engine import Request
from counterfact.agents._memo import ResultMemo

from .passes import CountingPasses


def _ask(text: str, **settings: Any) -> ModelRequest:
    return ModelRequest(
        messages=[ChatMessage(role="user", content=text)],
        settings=GenerationSettings(max_tokens=12, **settings),
    )


def test_a_repeated_chat_request_is_answered_without_a_forward_pass(
    tiny: LocalModel, counted: CountingPasses
) -> None:
    first = tiny.complete(_ask("Which way is north?"))
    passes, hits = counted.passes, tiny.engine.memo.hits
    again = tiny.complete(_ask("Which way is north?"))
    assert counted.passes == passes and tiny.engine.memo.hits == hits + 1
    assert again.text == first.text and again.usage == first.usage
    tiny.engine.memo.clear()
    assert tiny.complete(_ask("Which way is north?")).text == first.text  # what a fresh decode gives
    assert counted.passes > passes


def test_a_repeat_in_flight_joins_the_row_that_decodes_it(tiny: LocalModel, counted: CountingPasses) -> None:
    prompt = tiny.prompt_ids([ChatMessage(role="user", content="Count to ten.")])
    entered, release = threading.Event(), threading.Event()

    def hold(_: int) -> None:
        """Keeps the engine at the first token of `holding`, so the repeats queue behind it."""
        if not entered.is_set():
            entered.set()
            release.wait(10)

    joined = tiny.engine.memo.joined
    holding = tiny.engine.submit(Request(prompt[:-2], 4, ignore_eos=True, on_token=hold))
    assert entered.wait(10)
    leader, follower = (Request(prompt, 200, ignore_eos=True, share=True) for _ in range(2))
    tiny.engine.submit(leader)
    tiny.engine.submit(follower)
    release.set()
    holding.result(timeout=30)
    deadline = time.monotonic() + 10
    while tiny.engine.memo.joined == joined and time.monotonic() < deadline:
        time.sleep(0.001)
    assert tiny.engine.memo.joined == joined + 1
    assert leader.future.cancel()  # its caller left while decoding: the row stays for the follower
    tokens = follower.future.result(timeout=30).token_ids
    assert tokens == tiny.generate_ids(prompt, 200, ignore_eos=True)  # not shared: decoded alone


@pytest.mark.parametrize("kind", ["edit", "capture"])
def test_requests_that_edit_or_read_activations_are_never_shared(
    tiny: LocalModel, counted: CountingPasses, kind: str
) -> None:
    request, capture = _ask("Share me not."), None
    if kind == "edit":
        vector = [0.25] * tiny.geometry.hidden_size
        edit = {"layer": 0, "positions": "all", "operation": "add", "vector": vector}
        request = request.model_copy(update={"activation_edits": [edit]})
    else:
        capture = ["layers.0.mlp"]
    hits = tiny.engine.memo.hits
    tiny.complete(request, capture=capture)
    passes = counted.passes
    tiny.complete(request, capture=capture)
    assert counted.passes > passes and tiny.engine.memo.hits == hits


def test_sampled_requests_are_shared_only_with_the_same_seed(tiny: LocalModel, counted: CountingPasses) -> None:
    seeded = {"temperature": 1.0, "top_p": 0.9}
    hits = tiny.engine.memo.hits
    first = tiny.complete(_ask("Tell a tale.", seed=3, **seeded))
    tiny.complete(_ask("Tell a tale.", seed=4, **seeded))
    assert tiny.engine.memo.hits == hits
    assert tiny.complete(_ask("Tell a tale.", seed=3, **seeded)).text == first.text
    assert tiny.engine.memo.hits == hits + 1


def test_a_model_without_a_memo_decodes_every_request(tiny_dir: Any) -> None:
    model = LocalModel(tiny_dir, name="no-memo", memo_size=0)
    try:
        model.complete(_ask("Again?"))
        model.complete(_ask("Again?"))
        assert model.engine.memo.hits == 0
    finally:
        model.close()


def test_the_oldest_answers_go_first() -> None:
    memo: ResultMemo[str] = ResultMemo(capacity=2)
    for n in range(3):
        memo.put((n,), str(n))
    assert memo.get((0,)) is None
    assert memo.get((1,)) == "1"  # now the most recent: the next put drops (2,)
    memo.put((3,), "3")
    assert memo.get((2,)) is None and memo.get((1,)) == "1" and memo.get((3,)) == "3"
    assert memo.hits == 3


def test_an_answer_from_the_memo_is_the_caller_s_own(tiny: LocalModel) -> None:
    prompt = tiny.prompt_ids([ChatMessage(role="user", content="Mine alone?")])
    first = tiny.engine.submit(Request(prompt, 8, ignore_eos=True, share=True)).result(timeout=30)
    first.token_ids.append(-1)  # a caller changing its result changes nobody else's
    again = tiny.engine.submit(Request(prompt, 8, ignore_eos=True, share=True)).result(timeout=30)
    assert len(again.token_ids) == 8 and -1 not in again.token_ids


def test_forgetting_answers_makes_every_shared_model_decode_again(
    tiny: LocalModel, counted: CountingPasses, monkeypatch: pytest.MonkeyPatch
) -> None:
    from counterfact.agents import _registry, forget_answers

    monkeypatch.setitem(_registry._shared, "tiny-for-this-test", tiny)
    tiny.complete(_ask("Remember me?"))
    forget_answers()
    passes = counted.passes
    tiny.complete(_ask("Remember me?"))
    assert counted.passes > passes
