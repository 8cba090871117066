"""The store never prints a database password: errors and the CLI show the URL with it hidden."""

from __future__ import annotations

import pytest

from counterfact.store import StoreError, TraceStore


def test_an_unreachable_database_is_named_without_its_password() -> None:
    with pytest.raises(StoreError) as raised:
        TraceStore.open("postgresql://bob:s3cret@127.0.0.1:1/nowhere?password=alsosecret")
    message = str(raised.value)
    assert message.startswith("cannot open database postgresql+psycopg://bob:***@127.0.0.1:1/nowhere")
    assert "s3cret" not in message and "alsosecret" not in message


def test_display_url_hides_the_password(tmp_path: object) -> None:
    store = TraceStore.open(f"{tmp_path}/t.db")
    assert store.display_url == store.url  # nothing to hide
    store.url = "postgresql+psycopg://bob:s3cret@db/x"
    assert store.display_url == "postgresql+psycopg://bob:***@db/x"
