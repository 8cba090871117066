"""Activation edits and captures on the tiny Llama: positions, operations, per-row isolation."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load as load_safetensors
from safetensors.torch import save_file

from counterfact.agents import (
    ActivationEdit,
    ChatMessage,
    GenerationSettings,
    LocalModel,
    ModelError,
    ModelRequest,
)
from counterfact.agents._activations import resolve_edits
from counterfact.agents._engine import Request
from counterfact.capture import collect_calls

HELLO = [ChatMessage(role="user", content="Hello, how are you today?")]
SIX = GenerationSettings(max_tokens=6)
HELLO_SIX = ModelRequest(messages=HELLO, settings=SIX)


def vec(n: int, seed: int = 1) -> list[float]:
    return torch.randn(n, generator=torch.Generator().manual_seed(seed)).tolist()


def capture(model: LocalModel, point: str, edits: list[dict] | None = None) -> torch.Tensor:
    request = ModelRequest(messages=HELLO, settings=SIX, activation_edits=edits)
    _, acts = model.complete_with_activations(request, capture=[point])
    return acts[point]


def rows_equal_to(x: torch.Tensor, v: torch.Tensor) -> set[int]:
    return {i for i in range(x.shape[0]) if torch.equal(x[i], v)}


@pytest.mark.parametrize("spec", ["prompt", "generated", "all", "last", "list"])
def test_set_edit_hits_exactly_the_chosen_positions(tiny: LocalModel, spec: str) -> None:
    """Captures run after edits, so rows equal to the set vector are the edited positions."""
    prompt_len = len(tiny.prompt_ids(HELLO))
    positions: object = [1, prompt_len + 1] if spec == "list" else spec
    v = torch.tensor(vec(64))
    edit = {"layer": 0, "operation": "set", "vector": v.tolist(), "positions": positions}
    got = capture(tiny, "layers.0.residual", [edit])
    total = got.shape[0]  # positions 0..P+n-2: the prompt, then each generated token run
    assert total >= prompt_len + 2
    expected = {
        "prompt": set(range(prompt_len)),
        "generated": set(range(prompt_len, total)),
        "all": set(range(total)),
        "last": {prompt_len - 1},
        "list": {1, prompt_len + 1},
    }[spec]
    assert rows_equal_to(got, v) == expected


def test_add_adds_strength_times_vector_on_prompt(tiny: LocalModel) -> None:
    prompt_len = len(tiny.prompt_ids(HELLO))
    v = torch.tensor(vec(64))
    base = capture(tiny, "layers.0.mlp")
    edited = capture(
        tiny, "layers.0.mlp", [{"layer": 0, "component": "mlp", "vector": v.tolist(),
                                "strength": 2.5, "positions": "prompt"}]
    )
    diff = edited[:prompt_len] - base[:prompt_len]
    assert torch.allclose(diff, 2.5 * v.expand_as(diff), atol=1e-5)


def test_ablate_removes_the_direction(tiny: LocalModel) -> None:
    v = torch.tensor(vec(64))
    unit = v / v.norm()
    base = capture(tiny, "layers.1.residual")
    ablated = capture(tiny, "layers.1.residual", [{"layer": 1, "operation": "ablate",
                                                  "vector": v.tolist(), "positions": "all"}])
    assert (base @ unit).abs().max() > 1e-2
    assert (ablated @ unit).abs().max() < 1e-4


def test_scale_and_attn_component(tiny: LocalModel) -> None:
    zeroed = capture(tiny, "layers.1.attn", [{"layer": 1, "component": "attn",
                                             "operation": "scale", "strength": 0.0}])
    assert torch.count_nonzero(zeroed) == 0
    assert torch.count_nonzero(capture(tiny, "layers.1.attn")) > 0


def test_head_edit_touches_one_head_and_changes_attention(tiny: LocalModel) -> None:
    v = torch.tensor(vec(16))
    edit = [{"layer": 0, "component": "head", "head": 2, "operation": "set",
             "vector": v.tolist(), "positions": "prompt"}]
    prompt_len = len(tiny.prompt_ids(HELLO))
    assert rows_equal_to(capture(tiny, "layers.0.head.2", edit), v) == set(range(prompt_len))
    base_other = capture(tiny, "layers.0.head.1")[:prompt_len]
    assert torch.equal(capture(tiny, "layers.0.head.1", edit)[:prompt_len], base_other)
    base_attn = capture(tiny, "layers.0.attn")[:prompt_len]
    assert not torch.allclose(capture(tiny, "layers.0.attn", edit)[:prompt_len], base_attn)


def test_set_with_one_row_per_position_patches(tiny: LocalModel) -> None:
    patch = torch.randn(2, 64)
    edit = [{"layer": 0, "operation": "set", "vector": patch.tolist(), "positions": [4, 2]}]
    got = capture(tiny, "layers.0.residual", edit)
    assert torch.equal(got[4], patch[0]) and torch.equal(got[2], patch[1])


def test_edits_apply_per_batch_row(tiny: LocalModel) -> None:
    """In one batch, only the row that asked for an edit is edited."""
    prompts = ["Hello", "Tell me about cats", "One two three"]
    ids = [tiny.prompt_ids([ChatMessage(role="user", content=p)]) for p in prompts]
    edits = resolve_edits([{"layer": 0, "vector": vec(64), "strength": 8.0}], tiny.geometry)
    alone_plain = [tiny.generate_ids(i, 12, ignore_eos=True) for i in ids]
    alone_edited = tiny.engine.submit(Request(ids[1], 12, ignore_eos=True, edits=edits))
    alone_edited_ids = alone_edited.result().token_ids
    assert alone_edited_ids != alone_plain[1]
    futures = [
        tiny.engine.submit(Request(i, 12, ignore_eos=True, edits=edits if k == 1 else []))
        for k, i in enumerate(ids)
    ]
    batched = [f.result().token_ids for f in futures]
    assert batched == [alone_plain[0], alone_edited_ids, alone_plain[2]]


def test_next_token_logits_respects_position_semantics(tiny: LocalModel) -> None:
    base = tiny.next_token_logits(HELLO)
    first = tiny.complete(ModelRequest(messages=HELLO, settings=GenerationSettings(max_tokens=1)))
    assert tiny.tokenizer.decode([int(base.argmax())], skip_special_tokens=True) == first.text
    strong = {"layer": 1, "vector": vec(64), "strength": 10.0}
    at_last = tiny.next_token_logits(HELLO, [{**strong, "positions": "last"}])
    at_generated = tiny.next_token_logits(HELLO, [{**strong, "positions": "generated"}])
    assert not torch.allclose(at_last, base)
    assert torch.equal(at_generated, base)  # the prefill pass has no generated positions


def test_captures_go_into_the_record_as_safetensors(tiny: LocalModel) -> None:
    with collect_calls() as calls:
        _, acts = tiny.complete_with_activations(
            HELLO_SIX, capture=["layers.0.residual", "layers.1.head.3"]
        )
    (record,) = calls.model_calls
    assert record.activations is not None
    stored = load_safetensors(record.activations)
    assert set(stored) == {"layers.0.residual", "layers.1.head.3"}
    assert stored["layers.1.head.3"].shape[1] == 16
    assert torch.equal(stored["layers.0.residual"], acts["layers.0.residual"])
    assert record.params["capture"] == ["layers.0.residual", "layers.1.head.3"]


def test_vector_files(tiny: LocalModel, tmp_path: Path) -> None:
    v = torch.tensor(vec(64))
    np.save(tmp_path / "v.npy", v.numpy())
    save_file({"steer": v, "other": v * 2}, str(tmp_path / "v.safetensors"))
    prompt_len = len(tiny.prompt_ids(HELLO))
    for edit in (
        {"vector_file": str(tmp_path / "v.npy")},
        {"vector_file": str(tmp_path / "v.safetensors"), "vector_key": "steer"},
    ):
        full = {"layer": 0, "operation": "set", "positions": "last", **edit}
        assert rows_equal_to(capture(tiny, "layers.0.residual", [full]), v) == {prompt_len - 1}
    with pytest.raises(ModelError, match="set vector_key"):
        resolve_edits([{"layer": 0, "vector_file": str(tmp_path / "v.safetensors")}],
                      tiny.geometry)


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        ({"layer": 2, "vector": vec(64)}, r"layer 2 does not exist: valid layers are 0\.\.1"),
        ({"layer": [0, 5], "vector": vec(64)}, r"valid layers are 0\.\.1"),
        ({"layer": 0, "vector": vec(63)}, r"size 63.*hidden size is 64"),
        ({"layer": 0, "component": "head", "head": 0, "vector": vec(64)}, r"head dim is 16"),
        ({"layer": 0, "component": "head", "head": 4, "vector": vec(16)}, r"valid heads are 0\.\.3"),
        ({"layer": 0, "vector_file": "/nonexistent.npy"}, r"does not exist"),
    ],
)
def test_bad_edits_fail_before_generation(
    tiny: LocalModel, monkeypatch: pytest.MonkeyPatch, edit: dict, message: str
) -> None:
    def never(_request: Request) -> None:
        raise AssertionError("generation started")

    monkeypatch.setattr(tiny.engine, "submit", never)
    with pytest.raises(ModelError, match=message):
        tiny.complete(ModelRequest(messages=HELLO, activation_edits=[edit]))


def test_bad_capture_point(tiny: LocalModel) -> None:
    with pytest.raises(ModelError, match="bad hook point"):
        tiny.complete(ModelRequest(messages=HELLO), capture=["layers.0.heads"])
    with pytest.raises(ModelError, match="valid layers are 0..1"):
        tiny.complete(ModelRequest(messages=HELLO), capture=["layers.9.mlp"])


def test_edit_model_validation() -> None:
    with pytest.raises(ValueError, match="needs a vector"):
        ActivationEdit(layer=0, operation="add")
    with pytest.raises(ValueError, match="`head` is required"):
        ActivationEdit(layer=0, component="head", vector=[1.0])
    assert ActivationEdit(layer=[1, 2], operation="scale", strength=0.5).layers == [1, 2]
