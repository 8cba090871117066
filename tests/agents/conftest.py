"""Shared fixtures: a tiny random Llama with the embedded model's tokenizer, and the embedded model.

The tiny model makes the engine and hook tests fast and download-free; tests marked slow use
the real embedded model, loaded once per session.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from counterfact.agents._local import LocalModel


@pytest.fixture(scope="session")
def tokenizer_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The embedded model's tokenizer, saved as a plain tokenizer folder."""
    from transformers import AutoTokenizer

    from counterfact.agents._embedded import embedded_cache_dir, embedded_gguf

    cached = embedded_cache_dir()
    if (cached / "tokenizer.json").is_file():
        tokenizer = AutoTokenizer.from_pretrained(cached)
    else:
        gguf = embedded_gguf()
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    folder = tmp_path_factory.mktemp("tokenizer")
    tokenizer.save_pretrained(folder)
    return folder


def save_tiny_llama(folder: Path, tokenizer_dir: Path, *, context: int = 512) -> Path:
    """A randomly initialised 2-layer Llama with a peaked output distribution (few ties)."""
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=context,
        initializer_range=0.2,
        eos_token_id=tokenizer.eos_token_id,
        bos_token_id=tokenizer.bos_token_id,
    )
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory, tokenizer_dir: Path) -> Path:
    return save_tiny_llama(tmp_path_factory.mktemp("tiny"), tokenizer_dir)


@pytest.fixture(scope="session")
def tiny(tiny_dir: Path) -> Iterator[LocalModel]:
    model = LocalModel(tiny_dir, name="tiny")
    yield model
    model.close()


@pytest.fixture(scope="session")
def embedded() -> LocalModel:
    from counterfact.agents._embedded import load_embedded

    return load_embedded()
