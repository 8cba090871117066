"""Servers: a model behind an OpenAI-compatible API (serve), and the web viewer (ui)."""

from __future__ import annotations

from typing import Annotated

import typer

from counterfact.agents import DEFAULT_MAX_REQUEST_BYTES, DEFAULT_MAX_TOKENS_LIMIT
from counterfact.cli._common import DbOption, _open, console


def serve_command(
    model: Annotated[str, typer.Option(help="embedded | openai:NAME | local:PATH[#GGUF_FILE]")] = "embedded",
    host: Annotated[str, typer.Option(help="address to bind (loopback by default)")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="port")] = 8000,
    max_request_bytes: Annotated[
        int,
        typer.Option(min=1, envvar="COUNTERFACT_MAX_REQUEST_BYTES", help="largest request body accepted; larger is a 413"),
    ] = DEFAULT_MAX_REQUEST_BYTES,
    max_tokens_limit: Annotated[
        int,
        typer.Option(min=1, envvar="COUNTERFACT_MAX_TOKENS_LIMIT", help="largest max_tokens a request may ask for; more is a 400"),
    ] = DEFAULT_MAX_TOKENS_LIMIT,
) -> None:
    """Serve a model behind an OpenAI-compatible API (/v1/chat/completions, /v1/models)."""
    from counterfact.agents import serve

    serve(model, host=host, port=port, max_request_bytes=max_request_bytes, max_tokens_limit=max_tokens_limit)


def ui_command(
    host: Annotated[str, typer.Option(help="address to bind (loopback by default; elsewhere every request needs the token)")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="port")] = 8765,
    token: Annotated[str | None, typer.Option(help="the token to require (default: a new random one, printed)", envvar="COUNTERFACT_UI_TOKEN")] = None,
    db: DbOption = None,
) -> None:
    """A local web viewer: runs, steps, fork trees, comparisons, debug sessions; edit and replay."""
    import secrets

    from counterfact.ui import is_loopback, serve

    token = token or secrets.token_urlsafe(24)
    store = _open(db)
    shown = f"[{host}]" if ":" in host else host
    url = f"http://{shown}:{port}/"

    def announce() -> None:
        console.print(f"[bold]counterfact ui[/bold] on {store.display_url}", soft_wrap=True)
        console.print(f"open {url}" if is_loopback(host) else f"open {url}?token={token}", soft_wrap=True)
        console.print(f"API token (header X-Counterfact-Token): {token}", soft_wrap=True)

    serve(store, host=host, port=port, token=token, on_ready=announce)
