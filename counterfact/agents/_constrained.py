"""Constrained decoding with xgrammar: a local model's reply forced to match a JSON schema.

`Grammars` belongs to one tokenizer and compiles schemas: xgrammar's tables of the vocabulary
are built on first use, compiled grammars are kept in a small LRU by the schema's JSON. A
`TokenMask` follows one request, token by token. xgrammar is imported inside the functions, so
importing counterfact does not load it.
"""

from __future__ import annotations

import json
import re
import threading
from collections import OrderedDict
from typing import Any

import torch

from counterfact.agents._types import ModelError

# xgrammar's C++ errors start with "[hh:mm:ss] /path/file.cc:123: "; the rest is the message.
_CPP_PREFIX = re.compile(r"^\[[^\]]*\]\s*\S+:\d+:\s*")


class TokenMask:
    """One request's grammar state: masks the logits of each step and follows the chosen token."""

    def __init__(self, compiled: Any, key: str) -> None:
        import xgrammar as xgr

        self.key = key  # the schema's compact JSON: requests with equal keys are constrained alike
        self._matcher = xgr.GrammarMatcher(compiled)
        self._bitmask = xgr.allocate_token_bitmask(
            1, compiled.tokenizer_info.vocab_size
        )
        self._apply = xgr.apply_token_bitmask_inplace

    def mask(self, logits: torch.Tensor) -> None:
        """Set the logits [vocab] of every token the grammar forbids next to -inf, in place."""
        if self._matcher.fill_next_token_bitmask(self._bitmask):
            self._apply(logits.unsqueeze(0), self._bitmask)

    def accept(self, token: int) -> None:
        """Advance the grammar past `token`, which the mask allowed."""
        if not self._matcher.accept_token(token):
            raise RuntimeError(f"the JSON schema grammar rejected token {token}")

    @property
    def done(self) -> bool:
        """Whether the reply is complete: the grammar accepted its closing stop token."""
        return self._matcher.is_terminated()


class Grammars:
    """Compiled JSON-schema grammars for one tokenizer, shared by the threads that submit."""

    def __init__(
        self, tokenizer: Any, vocab_size: int, stop_ids: set[int], capacity: int = 32
    ) -> None:
        self._tokenizer = tokenizer
        self._vocab_size = vocab_size
        self._stop_ids = sorted(stop_ids)
        self._capacity = capacity
        self._compiler: Any = None
        self._compiled: OrderedDict[str, Any] = OrderedDict()
        self._lock = threading.Lock()

    def mask(self, schema: dict[str, Any]) -> TokenMask:
        """A fresh mask for one request whose reply must match `schema`."""
        key = _schema_key(schema)
        return TokenMask(self._compiled_for(key), key)

    def compile(self, schema: dict[str, Any]) -> Any:
        """The compiled grammar of `schema`, cached by its compact JSON.

        Keys keep their order: the reply writes an object's properties in the schema's order.
        """
        return self._compiled_for(_schema_key(schema))

    def _compiled_for(self, key: str) -> Any:
        with self._lock:
            if key in self._compiled:
                self._compiled.move_to_end(key)
                return self._compiled[key]
            try:
                compiled = self._compiler_for_tokenizer().compile_json_schema(
                    key, any_whitespace=False
                )
            except RuntimeError as exc:  # xgrammar's C++ errors, e.g. an unsupported keyword
                message = _CPP_PREFIX.sub("", " ".join(str(exc).split()))
                raise ModelError(f"cannot use json_schema: {message}") from None
            self._compiled[key] = compiled
            if len(self._compiled) > self._capacity:
                self._compiled.popitem(last=False)
            return compiled

    def _compiler_for_tokenizer(self) -> Any:
        """xgrammar's compiler, built on first use: it reads the whole vocabulary (~0.3 s)."""
        if self._compiler is None:
            import xgrammar as xgr

            info = xgr.TokenizerInfo.from_huggingface(
                self._tokenizer,
                vocab_size=self._vocab_size,
                stop_token_ids=self._stop_ids,
            )
            # Our LRU replaces xgrammar's own cache, which is unbounded by default.
            self._compiler = xgr.GrammarCompiler(info, cache_enabled=False)
        return self._compiler


def _schema_key(schema: dict[str, Any]) -> str:
    try:
        return json.dumps(schema, separators=(",", ":"))
    except (TypeError, ValueError) as exc:
        raise ModelError(f"cannot use json_schema: {exc}") from None
