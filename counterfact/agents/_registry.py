"""Turn a model spec string (from the CLI or a workflow file) into a `ChatModel`."""

from __future__ import annotations

import threading
from pathlib import Path

from counterfact.agents._types import ChatModel, ModelError

MODEL_SPEC_FORMS = (
    "embedded (the built-in SmolLM2-135M-Instruct, the default)",
    "openai:MODEL_NAME (an OpenAI-compatible API; OPENAI_BASE_URL, OPENAI_API_KEY)",
    "local:PATH[#GGUF_FILE] (a local Hugging Face model folder, or a .gguf file in it)",
)


def resolve_model(spec: str = "embedded") -> ChatModel:
    """The model named by `spec`; heavy backends are imported only when asked for."""
    kind, _, rest = spec.strip().partition(":")
    if kind == "embedded" and not rest:
        from counterfact.agents._embedded import load_embedded

        return load_embedded()
    if kind == "openai" and rest:
        from counterfact.agents._openai import OpenAIChatModel

        return OpenAIChatModel(rest)
    if kind == "local" and rest:
        from counterfact.agents._local import LocalModel

        folder, _, gguf_file = rest.partition("#")
        path = Path(folder) / gguf_file if gguf_file else Path(folder)
        return LocalModel(path, spec=spec.strip())  # recorded as given: `shared_model`'s key
    raise ModelError(f"unknown model spec {spec!r}; use one of: {'; '.join(MODEL_SPEC_FORMS)}")


_shared: dict[str, ChatModel] = {}
_shared_lock = threading.Lock()


def forget_answers() -> None:
    """Make every model this process shares forget the answers it keeps for repeated requests:
    a benchmark's debug session then pays what it would in a process of its own, as a user's
    `counterfact debug` of yesterday's run does."""
    for model in list(_shared.values()):
        model.forget_answers()


def shared_model(spec: str = "embedded") -> ChatModel:
    """The model named by `spec`, resolved once per process and then shared.

    A local model loaded twice would hold its weights twice and split its batching engine, so
    everything in a process that names the same spec gets the same `ChatModel`. A load holds
    the lock, so a second caller waits for it instead of loading again; models already loaded
    are returned without the lock, so their requests never wait for another model's load.
    """
    key = spec.strip()
    if (model := _shared.get(key)) is not None:
        return model
    with _shared_lock:
        if key not in _shared:
            _shared[key] = resolve_model(key)
        return _shared[key]
