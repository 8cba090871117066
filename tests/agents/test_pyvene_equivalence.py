"""counterfact's activation hooks against an independent implementation, pyvene.

The same tiny random Llama (fp32, fixed seed) is edited twice: once through counterfact's public
path (LocalModel, ActivationEdit, captures) and once by pyvene's AdditionIntervention or
VanillaIntervention on a separately loaded copy of the weights. The logits must agree to 1e-5 at
every position. counterfact returns only the next-token logits, so logits at every position are
rebuilt from a capture of the last layer's residual stream (captures run after edits) through
the final norm and the LM head.

Each case also checks that the comparison can fail: pyvene's edit moved to the other layer, or
shifted by one position, must give logits far from counterfact's.

Hook point names: counterfact's residual / attn / mlp / head.h are pyvene's block_output /
attention_output / mlp_output / head_attention_value_output (unit "h.pos").
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import pyvene as pv  # installed with --no-deps: its declared deps are heavy (see setup.sh)
import torch

from counterfact.agents import (
    ActivationEdit,
    ChatMessage,
    GenerationSettings,
    LocalModel,
    ModelRequest,
)
from counterfact.agents._activations import HookPoint, resolve_edits
from counterfact.agents._engine import Request

TOLERANCE = 1e-5
# Far above float noise and far below what a misplaced edit does (>0.1 on this model).
MISPLACED = 1e-3

BASE = [ChatMessage(role="user", content="The capital of France is Paris. What is it?")]
# Same token count as BASE, one word changed (symmetric token replacement, not noise).
SOURCE = [ChatMessage(role="user", content="The capital of Italy is Paris. What is it?")]

PV_NAME = {
    "residual": "block_output",
    "attn": "attention_output",
    "mlp": "mlp_output",
    "head": "head_attention_value_output",
}


@pytest.fixture(scope="module")
def reference(tiny_dir: Path) -> Any:
    """A second, independent copy of the tiny Llama for pyvene, loaded from the same folder."""
    from transformers import LlamaForCausalLM

    return LlamaForCausalLM.from_pretrained(tiny_dir, dtype=torch.float32).eval()


def make_edit(**fields: Any) -> ActivationEdit:
    """An edit validated the way a trace's JSON would be (positions may be a str or a list)."""
    return ActivationEdit.model_validate(fields)


def random_vector(width: int, seed: int) -> torch.Tensor:
    return torch.randn(width, generator=torch.Generator().manual_seed(seed))


def to_logits(reference: Any, residual: torch.Tensor) -> torch.Tensor:
    """Logits [positions, vocab] from the last layer's residual stream."""
    with torch.no_grad():
        return reference.lm_head(reference.model.norm(residual))


def last_point(model: LocalModel) -> str:
    return f"layers.{model.geometry.num_layers - 1}.residual"


def counterfact_prompt_logits(
    model: LocalModel, reference: Any, edits: list[ActivationEdit]
) -> torch.Tensor:
    """counterfact's logits at every prompt position, through its public capture path."""
    point = last_point(model)
    request = ModelRequest(
        messages=BASE, settings=GenerationSettings(max_tokens=1), activation_edits=edits
    )
    _, acts = model.complete_with_activations(request, capture=[point])
    return to_logits(reference, acts[point])


def capture(model: LocalModel, messages: list[ChatMessage], point: str) -> torch.Tensor:
    """Unedited activations of `messages` at `point`: [prompt positions, width]."""
    request = ModelRequest(messages=messages, settings=GenerationSettings(max_tokens=1))
    _, acts = model.complete_with_activations(request, capture=[point])
    return acts[point]


@dataclass(frozen=True)
class PvEdit:
    """One pyvene intervention: where, what kind, and with which source."""

    layer: int
    component: str  # counterfact's name
    positions: list[int]
    kind: Any  # pv.AdditionIntervention or pv.VanillaIntervention
    vector: torch.Tensor | None = None  # [width] or [positions, width]
    head: int | None = None
    source_ids: list[int] | None = None
    source_positions: list[int] | None = None

    def moved(self, *, layer: int | None = None, positions: list[int] | None = None) -> PvEdit:
        return PvEdit(
            self.layer if layer is None else layer,
            self.component,
            self.positions if positions is None else positions,
            self.kind,
            self.vector,
            self.head,
            self.source_ids,
            self.source_positions,
        )


def pyvene_logits(reference: Any, ids: list[int], edit: PvEdit) -> torch.Tensor:
    """pyvene's logits [positions, vocab] for `ids` with one intervention."""
    config: dict[str, Any] = {
        "layer": edit.layer,
        "component": PV_NAME[edit.component],
        "intervention_type": edit.kind,
    }
    if edit.head is not None:
        config["unit"] = "h.pos"
        base_locations: list[Any] = [[[edit.head]], [edit.positions]]
    else:
        base_locations = [edit.positions]
    wrapped = pv.IntervenableModel(pv.IntervenableConfig([config]), reference)
    kwargs: dict[str, Any] = {}
    if edit.source_ids is not None:
        assert edit.source_positions is not None
        kwargs["sources"] = [{"input_ids": torch.tensor([edit.source_ids])}]
        kwargs["unit_locations"] = {
            "sources->base": ([[edit.source_positions]], [base_locations])
        }
    else:
        assert edit.vector is not None
        kwargs["unit_locations"] = {"base": [base_locations]}
        vector = edit.vector if edit.vector.ndim == 1 else edit.vector[None]
        kwargs["source_representations"] = vector
    with torch.no_grad():
        _, out = wrapped({"input_ids": torch.tensor([ids])}, **kwargs)
    return out.logits[0]


def shifted(positions: list[int], total: int) -> list[int]:
    """Each position moved one later (one earlier where that runs off the end); same count, so
    rows of a 2-D vector or of a source still pair up."""
    return [p + 1 if p + 1 < total else p - 1 for p in positions]


def assert_equivalent(
    model: LocalModel, reference: Any, ids: list[int], got: torch.Tensor, edit: PvEdit
) -> None:
    """`got` matches pyvene's logits, and would not match a misplaced edit."""
    expected = pyvene_logits(reference, ids, edit)
    assert got.shape == expected.shape
    diff = (got - expected).abs().max().item()
    assert diff < TOLERANCE, f"counterfact and pyvene differ by {diff}"
    other_layer = (edit.layer + 1) % model.geometry.num_layers
    for wrong in (
        edit.moved(layer=other_layer),
        edit.moved(positions=shifted(edit.positions, len(ids))),
    ):
        gap = (got - pyvene_logits(reference, ids, wrong)).abs().max().item()
        assert gap > MISPLACED, f"a misplaced edit ({wrong.layer}, {wrong.positions}) matches too"


def absolute(spec: str | list[int], prompt_len: int) -> list[int]:
    """The prompt positions a position spec selects in the prompt pass."""
    if isinstance(spec, list):
        return spec
    return {
        "all": list(range(prompt_len)),
        "prompt": list(range(prompt_len)),
        "last": [prompt_len - 1],
    }[spec]


COMPONENTS = ["residual", "attn", "mlp"]
SPECS: list[str | list[int]] = ["all", "prompt", "last", [1, 7, 12]]


@pytest.mark.parametrize("component", COMPONENTS)
@pytest.mark.parametrize("layer", [0, 1])
@pytest.mark.parametrize("spec", SPECS, ids=str)
def test_addition_matches_pyvene(
    tiny: LocalModel, reference: Any, component: str, layer: int, spec: str | list[int]
) -> None:
    """`add` with a strength equals pyvene's AdditionIntervention of strength*vector."""
    ids = tiny.prompt_ids(BASE)
    v = random_vector(tiny.geometry.hidden_size, seed=layer + 10)
    edit = make_edit(
        layer=layer, component=component, positions=spec, vector=v.tolist(), strength=2.5
    )
    got = counterfact_prompt_logits(tiny, reference, [edit])
    positions = absolute(spec, len(ids))
    assert_equivalent(
        tiny, reference, ids, got, PvEdit(layer, component, positions, pv.AdditionIntervention, 2.5 * v)
    )


@pytest.mark.parametrize("component", COMPONENTS)
@pytest.mark.parametrize("layer", [0, 1])
@pytest.mark.parametrize("spec", ["last", [2, 9]], ids=str)
def test_set_vector_matches_pyvene(
    tiny: LocalModel, reference: Any, component: str, layer: int, spec: str | list[int]
) -> None:
    """`set` with one vector equals pyvene's VanillaIntervention with that representation."""
    ids = tiny.prompt_ids(BASE)
    v = random_vector(tiny.geometry.hidden_size, seed=layer + 20)
    edit = make_edit(
        layer=layer, component=component, positions=spec, operation="set", vector=v.tolist()
    )
    got = counterfact_prompt_logits(tiny, reference, [edit])
    positions = absolute(spec, len(ids))
    assert_equivalent(
        tiny, reference, ids, got, PvEdit(layer, component, positions, pv.VanillaIntervention, v)
    )


def differing_position(a: list[int], b: list[int]) -> int:
    assert len(a) == len(b), "BASE and SOURCE must tokenize to the same length"
    changed = [i for i, (x, y) in enumerate(zip(a, b, strict=True)) if x != y]
    assert len(changed) == 1
    return changed[0]


@pytest.mark.parametrize("component", COMPONENTS)
@pytest.mark.parametrize("layer", [0, 1])
@pytest.mark.parametrize("cross", [False, True], ids=["aligned", "crossed"])
def test_patch_from_another_input_matches_pyvene(
    tiny: LocalModel, reference: Any, component: str, layer: int, cross: bool
) -> None:
    """Activations captured on SOURCE and `set` as rows into BASE equal pyvene's interchange.

    Aligned: the changed token and the last position take SOURCE's activations at the same
    positions. Crossed: rows go to other positions, in a non-sorted order, so that a row/position
    mix-up shows.
    """
    ids, source_ids = tiny.prompt_ids(BASE), tiny.prompt_ids(SOURCE)
    changed = differing_position(ids, source_ids)
    last = len(ids) - 1
    source_positions = [changed, last] if not cross else [changed, 4]
    base_positions = [changed, last] if not cross else [last, 3]
    source_acts = capture(tiny, SOURCE, f"layers.{layer}.{component}")
    rows = source_acts[source_positions]
    edit = make_edit(
        layer=layer,
        component=component,
        positions=base_positions,
        operation="set",
        vector=rows.tolist(),
    )
    got = counterfact_prompt_logits(tiny, reference, [edit])
    pv_edit = PvEdit(
        layer,
        component,
        base_positions,
        pv.VanillaIntervention,
        source_ids=source_ids,
        source_positions=source_positions,
    )
    assert_equivalent(tiny, reference, ids, got, pv_edit)


@pytest.mark.parametrize("layer", [0, 1])
@pytest.mark.parametrize("operation", ["add", "set"])
def test_head_edit_matches_pyvene(
    tiny: LocalModel, reference: Any, layer: int, operation: str
) -> None:
    """A head's slice of the o_proj input, edited, equals pyvene's head-level intervention."""
    ids = tiny.prompt_ids(BASE)
    v = random_vector(tiny.geometry.head_dim, seed=layer + 30)
    positions = [3, 8, len(ids) - 1]
    edit = make_edit(
        layer=layer,
        component="head",
        head=2,
        positions=positions,
        operation=operation,
        vector=v.tolist(),
    )
    got = counterfact_prompt_logits(tiny, reference, [edit])
    kind = pv.AdditionIntervention if operation == "add" else pv.VanillaIntervention
    pv_edit = PvEdit(layer, "head", positions, kind, v, head=2)
    assert_equivalent(tiny, reference, ids, got, pv_edit)
    # Another head at the same place must not match.
    other = pyvene_logits(reference, ids, PvEdit(layer, "head", positions, kind, v, head=1))
    assert (got - other).abs().max().item() > MISPLACED


def counterfact_generation(
    model: LocalModel, ids: list[int], edit: ActivationEdit, new_tokens: int
) -> tuple[list[int], torch.Tensor]:
    """Greedy tokens and the last layer's residual at every position run (prefill + decode)."""
    point = HookPoint(model.geometry.num_layers - 1, "residual")
    request = Request(
        prompt_ids=ids,
        max_new_tokens=new_tokens,
        ignore_eos=True,
        edits=resolve_edits([edit], model.geometry),
        capture=[point],
    )
    result = model.engine.submit(request).result()
    assert len(result.token_ids) == new_tokens
    return result.token_ids, result.activations[point.name]


def pyvene_generate(
    reference: Any, ids: list[int], layer: int, on_prompt: bool, v: torch.Tensor, new_tokens: int
) -> tuple[list[int], torch.Tensor]:
    """pyvene's greedy generation with an addition: on the prompt pass only (at every prompt
    position), or on every decode step only (at the one token each step runs).

    Returns the new tokens and the raw logits [new_tokens, vocab] of each step.
    """
    config = {"layer": layer, "component": "block_output", "intervention_type": pv.AdditionIntervention}
    wrapped = pv.IntervenableModel(pv.IntervenableConfig([config]), reference)
    positions = list(range(len(ids))) if on_prompt else [0]
    with torch.no_grad():
        _, out = wrapped.generate(
            {"input_ids": torch.tensor([ids])},
            unit_locations={"base": [[positions]]},
            source_representations=v,
            intervene_on_prompt=on_prompt,
            max_new_tokens=new_tokens,
            min_new_tokens=new_tokens,  # masks EOS in the scores only; raw logits are kept
            do_sample=False,
            pad_token_id=reference.config.eos_token_id,
            output_logits=True,
            return_dict_in_generate=True,
        )
    return out.sequences[0, len(ids) :].tolist(), torch.stack(out.logits)[:, 0]


@pytest.mark.parametrize("spec", ["prompt", "generated"])
@pytest.mark.parametrize("layer", [0, 1])
def test_prompt_or_generated_edits_match_pyvene_generate(
    tiny: LocalModel, reference: Any, spec: str, layer: int
) -> None:
    """"prompt" edits the prefill pass only and "generated" each decode step only, as pyvene's
    generate does with intervene_on_prompt True / False; the KV-cached passes line up exactly.

    Edits leaking into the wrong pass are caught by comparing with the opposite pyvene mode.
    """
    ids = tiny.prompt_ids(BASE)
    new_tokens = 6
    v = random_vector(tiny.geometry.hidden_size, seed=layer + 40)
    tokens, residual = counterfact_generation(
        tiny, ids, make_edit(layer=layer, positions=spec, vector=v.tolist()), new_tokens
    )
    # Step k's logits come from the pass over absolute position P-1+k.
    got = to_logits(reference, residual[len(ids) - 1 :])
    on_prompt = spec == "prompt"
    expected_tokens, expected = pyvene_generate(reference, ids, layer, on_prompt, v, new_tokens)
    assert tokens == expected_tokens
    diff = (got - expected).abs().max().item()
    assert diff < TOLERANCE, f"counterfact and pyvene differ by {diff}"
    other_layer = (layer + 1) % tiny.geometry.num_layers
    for wrong_layer, wrong_mode in ((other_layer, on_prompt), (layer, not on_prompt)):
        _, wrong = pyvene_generate(reference, ids, wrong_layer, wrong_mode, v, new_tokens)
        assert (got - wrong).abs().max().item() > MISPLACED


# A KV-cached decode step and a full forward over the same tokens differ by float rounding:
# unedited, up to 1.05e-5 on this model's logits (|logit| up to ~8). Edits at "all" or listed
# positions across both passes cannot be written as one pyvene generate call (it edits either the
# prompt pass or the decode steps, at the same locations), so they are compared with pyvene's
# edit of one full forward, within that rounding.
DECODE_TOLERANCE = 5e-5


@pytest.mark.parametrize("spec", ["all", "list"])
@pytest.mark.parametrize("layer", [0, 1])
def test_edits_across_prefill_and_decode_match_pyvene_on_the_full_sequence(
    tiny: LocalModel, reference: Any, spec: str, layer: int
) -> None:
    """Edits at absolute positions spanning the prompt and the generated tokens equal pyvene's
    edit of one forward pass over prompt + generated tokens at the same positions."""
    ids = tiny.prompt_ids(BASE)
    prompt_len = len(ids)
    v = random_vector(tiny.geometry.hidden_size, seed=layer + 50)
    spec_value: Any = [3, prompt_len + 1, prompt_len + 3] if spec == "list" else spec
    tokens, residual = counterfact_generation(
        tiny, ids, make_edit(layer=layer, positions=spec_value, vector=v.tolist()), 6
    )
    run = ids + tokens[:-1]  # the last generated token is never run
    got = to_logits(reference, residual)
    positions = list(range(len(run))) if spec == "all" else spec_value
    pv_edit = PvEdit(layer, "residual", positions, pv.AdditionIntervention, v)
    expected = pyvene_logits(reference, run, pv_edit)
    diff = (got - expected).abs().max().item()
    assert diff < DECODE_TOLERANCE, f"counterfact and pyvene differ by {diff}"
    other_layer = (layer + 1) % tiny.geometry.num_layers
    for wrong in (
        pv_edit.moved(layer=other_layer),
        pv_edit.moved(positions=shifted(positions, len(run))),
    ):
        assert (got - pyvene_logits(reference, run, wrong)).abs().max().item() > MISPLACED


def test_next_token_logits_match_pyvene(tiny: LocalModel, reference: Any) -> None:
    """The public `next_token_logits` agrees with pyvene's last-position logits."""
    ids = tiny.prompt_ids(BASE)
    v = random_vector(tiny.geometry.hidden_size, seed=60)
    edit = make_edit(layer=0, component="attn", positions=[2, 5], vector=v.tolist())
    got = tiny.next_token_logits(BASE, activation_edits=[edit])
    expected = pyvene_logits(reference, ids, PvEdit(0, "attn", [2, 5], pv.AdditionIntervention, v))
    assert (got - expected[-1]).abs().max().item() < TOLERANCE
    unedited = tiny.next_token_logits(BASE)
    assert (got - unedited).abs().max().item() > MISPLACED
