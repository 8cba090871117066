"""The white-box backend: a transformers causal LM run in this process, on CPU, in fp32.

Generation goes through one batching engine per model (see _engine.py), so concurrent calls
share decode steps; activation edits and captures are per request (see _activations.py), and so
is a `json_schema`, which masks each step to the tokens its grammar allows (see _constrained.py).
`astream` streams plain text token by token; closing the stream takes its row out of the batch.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import time
from collections.abc import AsyncGenerator
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save as save_safetensors

from counterfact.agents._activations import (
    Geometry,
    HookSet,
    parse_point,
    resolve_edits,
)
from counterfact.agents._constrained import Grammars
from counterfact.agents._engine import Engine, Request, Result
from counterfact.agents._memo import ResultMemo
from counterfact.agents._tools import parse_spec_calls, spec_protocol_prompt
from counterfact.agents._types import (
    ChatMessage,
    ChatModel,
    Completion,
    ContextLengthExceeded,
    GenerationSettings,
    ModelError,
    ModelRequest,
    Usage,
)
from counterfact.capture import ModelCallRecord, recorded_reply, report_model_call


def _decoder_layers(model: Any) -> list[torch.nn.Module]:
    """The decoder layers, if each has the modules the hook points need."""
    inner = getattr(model, "model", None)
    layers = getattr(inner, "layers", None)
    if not isinstance(layers, torch.nn.ModuleList) or len(layers) == 0:
        raise ModelError(f"unsupported architecture {type(model).__name__}: no model.layers")
    for layer in layers:
        attn = getattr(layer, "self_attn", None)
        if attn is None or not hasattr(attn, "o_proj") or not hasattr(layer, "mlp"):
            raise ModelError(
                f"unsupported architecture {type(model).__name__}: "
                "decoder layers lack self_attn.o_proj or mlp"
            )
    return list(layers)


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())[:300] or type(exc).__name__


class LocalModel(ChatModel):
    """A local Hugging Face model (a folder, or a .gguf file) that accepts activation edits."""

    backend = "local"
    white_box = True

    def __init__(
        self,
        path: str | Path,
        *,
        name: str | None = None,
        max_batch: int = 16,
        spec: str | None = None,
        memo_size: int = 1024,
    ) -> None:
        """`memo_size` answers are kept to answer repeated requests from (see `_memo`); 0 keeps none."""
        from transformers import AutoModelForCausalLM, AutoTokenizer
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()  # a load bar on every CLI command is noise

        path = Path(path)
        if not path.exists():
            raise ModelError(f"model path {path} does not exist")
        folder, extra = (path.parent, {"gguf_file": path.name}) if path.is_file() else (path, {})
        try:
            model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32, **extra)
            tokenizer = AutoTokenizer.from_pretrained(folder, **extra)
        except Exception as exc:  # noqa: BLE001 - any load failure is a configuration error
            raise ModelError(f"cannot load model {path}: {_one_line(exc)}") from None
        layers = _decoder_layers(model)
        if not getattr(tokenizer, "chat_template", None):
            raise ModelError(f"model {path} has no chat template")
        model.eval()
        config = model.config
        heads = int(config.num_attention_heads)
        head_dim = int(getattr(config, "head_dim", None) or config.hidden_size // heads)
        self.geometry = Geometry(len(layers), int(config.hidden_size), heads, head_dim)
        self.context_window = int(config.max_position_embeddings)
        self.model = model
        self.tokenizer = tokenizer
        self._name = name or path.stem
        self.spec = spec or f"local:{path}"  # how a replay in another process gets it back
        self._takes_tools: bool | None = None
        eos = {tokenizer.eos_token_id} if tokenizer.eos_token_id is not None else set()
        configured = model.generation_config.eos_token_id
        eos |= set(configured if isinstance(configured, list) else [configured]) - {None}
        self.engine = Engine(
            model, tokenizer, HookSet(layers, self.geometry), eos, max_batch, memo=ResultMemo(memo_size)
        )
        self.grammars = Grammars(tokenizer, int(config.vocab_size), eos)

    @property
    def name(self) -> str:
        return self._name

    def close(self) -> None:
        """Stop the engine thread (after the requests already queued)."""
        self.engine.close()

    def forget_answers(self) -> None:
        self.engine.memo.clear()

    # --- requests -----------------------------------------------------------------------------

    def prompt_ids(
        self, messages: list[ChatMessage], tools: list[dict[str, Any]] | None = None
    ) -> list[int]:
        """Token ids of `messages` through the chat template, with the generation prompt.

        A final assistant message is a prefix the model continues (a prefix edit), not a turn.
        """
        chat = [m.model_dump(include={"role", "content"}) for m in messages]
        prefilled = bool(messages) and messages[-1].role == "assistant"
        text = self.tokenizer.apply_chat_template(
            chat,
            tools=tools,
            add_generation_prompt=not prefilled,
            continue_final_message=prefilled,
            tokenize=False,
        )
        ids: list[int] = self.tokenizer(text, add_special_tokens=False)["input_ids"]
        if len(ids) >= self.context_window:
            raise ContextLengthExceeded(
                f"prompt has {len(ids)} tokens; the context window is {self.context_window}"
            )
        return ids

    def check_edits(self, edits: list[Any]) -> None:
        """Raise ModelError for an activation edit this model cannot take (a layer, head or
        vector width it does not have), before any generation."""
        resolve_edits(edits, self.geometry)

    def _request(
        self,
        request: ModelRequest,
        template_tools: list[dict[str, Any]] | None,
        capture: list[str] | None,
        **extra: Any,
    ) -> Request:
        """Check everything that can be checked before generation, and build the engine's
        request; `template_tools` go through the chat template."""
        settings = request.settings
        edits = resolve_edits(request.activation_edits or [], self.geometry)
        points = [parse_point(p, self.geometry) for p in capture or []]
        ids = self.prompt_ids(request.messages, template_tools)
        schema = settings.json_schema
        constraint = self.grammars.mask(schema) if schema is not None else None
        job = Request(
            prompt_ids=ids,
            max_new_tokens=min(settings.max_tokens, self.context_window - len(ids)),
            temperature=settings.temperature,
            top_p=settings.top_p,
            seed=settings.seed if settings.seed is not None else 0,
            stop=list(settings.stop),
            edits=edits,
            capture=points,
            constraint=constraint,
            share=True,
            **extra,
        )
        if job.takes_draft and (recorded := recorded_reply()):
            job.draft = self.tokenizer(recorded, add_special_tokens=False)["input_ids"]
        return job

    def _prepare(
        self, request: ModelRequest, capture: list[str] | None
    ) -> tuple[ModelRequest, Request]:
        """The request as the model answers it, with its seed settled, and its engine request.
        Tools go through the chat template where it has a place for them, else through the text
        protocol (a small model's template often ignores them); the request keeps them either
        way, to read calls from the reply and to record them."""
        settings = self._settled(request.settings)
        tools = request.tools
        if tools and settings.json_schema is not None:
            # A reply forced to be JSON cannot also call a tool (nor carry protocol lines).
            raise ModelError("json_schema and tools cannot be combined on a local model")
        if not tools or self._template_takes_tools():
            request = request.model_copy(update={"settings": settings})
            return request, self._request(request, tools, capture)
        stop = [*settings.stop, *(s for s in ("RESULT ",) if s not in settings.stop)]
        request = request.model_copy(
            update={
                "messages": with_text_protocol(request.messages, tools),
                "settings": settings.model_copy(update={"stop": stop}),
            }
        )
        return request, self._request(request, None, capture)

    def _template_takes_tools(self) -> bool:
        if self._takes_tools is None:
            probe = [{"role": "user", "content": "hi"}]
            spec = [{"type": "function", "function": {"name": "probe_tool_name", "parameters": {}}}]
            rendered = self.tokenizer.apply_chat_template(probe, tools=spec, tokenize=False)
            self._takes_tools = "probe_tool_name" in str(rendered)
        return self._takes_tools

    @staticmethod
    def _settled(settings: GenerationSettings) -> GenerationSettings:
        """Fix a seed for sampled requests, so the trace can replay them exactly."""
        if settings.temperature > 0 and settings.seed is None:
            settings = settings.model_copy(update={"seed": secrets.randbits(31)})
        return settings

    def _completion(
        self,
        request: ModelRequest,
        job: Request,
        result: Result,
        started: float,
        capture: list[str] | None,
    ) -> Completion:
        """Build the completion of `request` (as prepared) and report the call to the trace
        recorder."""
        latency = (time.perf_counter() - started) * 1000.0
        usage = Usage(prompt_tokens=len(job.prompt_ids), completion_tokens=len(result.token_ids))
        tools = request.tools
        calls = parse_spec_calls(result.text, tools) if tools else []
        completion = Completion(
            text=result.text,
            finish_reason="tool_calls" if calls else result.finish_reason,
            usage=usage,
            latency_ms=latency,
            model=self.name,
            tool_calls=calls,
        )
        activation_edits = request.activation_edits
        params: dict[str, Any] = {**request.settings.model_dump(), "counterfact_model": self.spec}
        if tools:
            params["tools"] = request.tool_names()
        if activation_edits:
            params["activation_edits"] = [
                e if isinstance(e, dict) else e.model_dump() for e in activation_edits
            ]
            params["activation_edit_hits"] = result.edit_hits
        if capture:
            params["capture"] = list(capture)
        report_model_call(
            ModelCallRecord(
                backend=self.backend,
                model=self.name,
                params=params,
                request=[m.model_dump(exclude_none=True) for m in request.messages],
                response={
                    "role": "assistant", "content": result.text,
                    **({"tool_calls": [c.model_dump() for c in calls]} if calls else {}),
                },
                finish_reason=completion.finish_reason,
                prompt_tokens=usage.prompt_tokens,
                completion_tokens=usage.completion_tokens,
                latency_ms=latency,
                activations=save_safetensors(result.activations) if result.activations else None,
            )
        )
        return completion

    def complete(self, request: ModelRequest, *, capture: list[str] | None = None) -> Completion:
        """Answer `request`; `capture` names hook points whose activations go into the trace."""
        return self.complete_with_activations(request, capture=capture)[0]

    def complete_with_activations(
        self, request: ModelRequest, *, capture: list[str] | None = None
    ) -> tuple[Completion, dict[str, torch.Tensor]]:
        """Like `complete`, also returning the captured activations: point -> [positions, width].

        Rows are absolute positions 0..P+n-2 (the last generated token is never run).
        """
        started = time.perf_counter()
        request, job = self._prepare(request, capture)
        result = self.engine.submit(job).result()
        return self._completion(request, job, result, started, capture), result.activations

    async def acomplete(
        self, request: ModelRequest, *, capture: list[str] | None = None
    ) -> Completion:
        """Queue the request on the engine and await it without holding a thread."""
        started = time.perf_counter()
        request, job = self._prepare(request, capture)
        result = await asyncio.wrap_future(self.engine.submit(job))
        return self._completion(request, job, result, started, capture)

    async def astream(self, request: ModelRequest) -> AsyncGenerator[str | Completion, None]:
        """Check the request now; its stream sends plain text token by token. With tools, a JSON
        schema or stop strings the text is final only at the end (tool lines are parsed out, a
        stop string cuts it), so it comes whole, with the completion. The request reaches the
        engine when the stream is first read; closing the stream cancels it."""
        started = time.perf_counter()
        request, job = self._prepare(request, None)
        settings = request.settings
        incremental = not request.tools and settings.json_schema is None and not settings.stop
        return self._stream(request, job, started, incremental)

    async def _stream(
        self, request: ModelRequest, job: Request, started: float, incremental: bool
    ) -> AsyncGenerator[str | Completion, None]:
        loop = asyncio.get_running_loop()
        arrivals: asyncio.Queue[int | None] = asyncio.Queue()  # token ids, then None when done
        future = job.future

        def deliver(token: int | None) -> None:
            """Runs on the engine thread; a closed loop means nobody reads any more: stop."""
            try:
                loop.call_soon_threadsafe(arrivals.put_nowait, token)
            except RuntimeError:
                future.cancel()

        if incremental:
            job.on_token = deliver
        future.add_done_callback(lambda _: deliver(None))
        deltas = _TextDeltas(self.tokenizer, self.engine.eos_ids)
        self.engine.submit(job)
        try:
            while (token := await arrivals.get()) is not None:
                if text := deltas.push(token):
                    yield text
            result = future.result()
        finally:
            future.cancel()  # the reader left early (a no-op once there is a result)
        yield self._completion(request, job, result, started, None)

    def next_token_logits(
        self, messages: list[ChatMessage], activation_edits: list[Any] | None = None
    ) -> torch.Tensor:
        """Logits [vocab] of the first generated token, for comparing distributions (KL)."""
        request = ModelRequest(
            messages=messages,
            settings=GenerationSettings(max_tokens=1),
            activation_edits=activation_edits,
        )
        result = self.engine.submit(self._request(request, None, None, logits_only=True)).result()
        assert result.first_logits is not None
        return result.first_logits

    def generate_ids(
        self, prompt_ids: list[int], max_new_tokens: int, *, ignore_eos: bool = False
    ) -> list[int]:
        """Greedy token ids for raw prompt ids (benchmarks compare these with HF generate)."""
        request = Request(list(prompt_ids), max_new_tokens, ignore_eos=ignore_eos)
        return self.engine.submit(request).result().token_ids




class _TextDeltas:
    """Token ids in, text deltas out. Decodes a short window only (the tokens since the last
    delta, with those of the delta before for the spacing they imply), and holds a delta back
    while it ends inside a multi-byte character (decoded as U+FFFD until its last byte comes)."""

    def __init__(self, tokenizer: Any, skipped: set[int]) -> None:
        self.tokenizer = tokenizer
        self.skipped = skipped
        self.ids: list[int] = []
        self.window = 0  # the first token decoded again, for context
        self.sent = 0  # tokens whose text has gone out

    def push(self, token: int) -> str:
        if token in self.skipped:
            return ""
        self.ids.append(token)
        before = self._decode(self.ids[self.window : self.sent])
        after = self._decode(self.ids[self.window :])
        if len(after) <= len(before) or after.endswith("\ufffd"):
            return ""
        self.window, self.sent = self.sent, len(self.ids)
        return after[len(before) :]

    def _decode(self, ids: list[int]) -> str:
        return str(self.tokenizer.decode(ids, skip_special_tokens=True))


def with_text_protocol(messages: list[ChatMessage], tools: list[dict[str, Any]]) -> list[ChatMessage]:
    """`messages` with `tools` taught in the system message, earlier tool calls written as
    CALL lines and tool results as RESULT lines: the text protocol of `_tools`."""
    protocol = spec_protocol_prompt(tools)
    out: list[ChatMessage] = []
    if messages and messages[0].role == "system":
        out.append(ChatMessage(role="system", content=f"{messages[0].content}\n\n{protocol}"))
        messages = messages[1:]
    else:
        out.append(ChatMessage(role="system", content=protocol))
    for message in messages:
        if message.role == "assistant" and message.tool_calls:
            lines = [f"CALL {c.name} {json.dumps(c.arguments)}" for c in message.tool_calls]
            out.append(ChatMessage(role="assistant", content="\n".join(filter(None, [message.content, *lines]))))
        elif message.role == "tool":
            result = f"RESULT {message.name or 'tool'}: {message.content}"
            if out and out[-1].role == "user" and out[-1].content.startswith("RESULT "):
                out[-1] = ChatMessage(role="user", content=f"{out[-1].content}\n{result}")
            else:
                out.append(ChatMessage(role="user", content=result))
        else:
            out.append(message)
    return out
