"""Fixtures shared by the whole suite: stores on a SQLite file and on a fresh PostgreSQL
database; a tiny random Llama with the embedded model's tokenizer (fast, download-free local
model tests), and the embedded model itself for tests marked slow."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from sqlalchemy import create_engine, text

from counterfact.agents import LocalModel
from counterfact.store import TraceStore

PG_ADMIN_URL = os.environ.get(
    "COUNTERFACT_TEST_PG", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)


WHOWHEN = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "whowhen"


def require(present: bool, reason: str) -> None:
    """Skip a test whose prerequisite is missing, with the reason; under CI (CI set), fail:
    there a missing prerequisite is a broken setup, not a test to leave out."""
    if present:
        return
    if os.environ.get("CI", "").lower() not in ("", "0", "false"):
        pytest.fail(f"{reason} (CI is set: a missing prerequisite fails)")
    pytest.skip(reason)


@pytest.fixture
def whowhen() -> Path:
    """The Who&When logs beside the project (../shared/data/whowhen)."""
    require((WHOWHEN / "Hand-Crafted").is_dir(), f"the Who&When subset is not at {WHOWHEN}")
    return WHOWHEN


def _pg_available() -> bool:
    try:
        with create_engine(PG_ADMIN_URL).connect():
            return True
    except Exception:
        return False


@pytest.fixture(scope="session")
def pg_url() -> Iterator[str]:
    """A PostgreSQL database of its own for this test session, dropped afterwards."""
    require(_pg_available(), f"PostgreSQL is not reachable at {PG_ADMIN_URL}; start it (see .ci/run)")
    name = f"cf_test_{uuid.uuid4().hex[:10]}"
    admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT", pool_pre_ping=True)
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    yield PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


@pytest.fixture
def sqlite_path(tmp_path: Path) -> str:
    return str(tmp_path / "trace.db")


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[TraceStore]:
    """A fresh, migrated store on each backend."""
    if request.param == "sqlite":
        s = TraceStore.open(str(tmp_path / "trace.db"))
    else:
        s = TraceStore.open(request.getfixturevalue("pg_url"))
        _truncate(s)
    yield s
    s.close()


def _truncate(store: TraceStore) -> None:
    with store.begin() as conn:
        conn.execute(
            text(
                "TRUNCATE runs, steps, model_calls, tool_calls, blobs, checkpoints, "
                "checkpoint_writes CASCADE"
            )
        )


@pytest.fixture(scope="session")
def tokenizer_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The embedded model's tokenizer, saved as a plain tokenizer folder."""
    from transformers import AutoTokenizer

    from counterfact.agents import embedded_cache_dir, embedded_gguf

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
    from counterfact.agents import load_embedded

    return load_embedded()
