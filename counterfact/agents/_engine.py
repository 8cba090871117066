"""The batching generation loop: one background thread owns the model and decodes many requests.

Requests are prefilled one at a time (no padding, so the prompt pass of a request is the same
as when it runs alone), in fixed blocks whose keys and values are reused across requests that
share a prompt prefix (`_prefix_cache`) and then join the running batch at the next step boundary. The batch
keeps a shared KV cache, left padded: each row's keys sit at the right end, padded columns are
masked out, and each row gets its own position ids, so a row decodes as it would alone.
Finished rows leave the batch, and leading columns that no row needs any more are dropped.
A request the engine has answered before is answered again from `_memo`, and one that is being
decoded now joins that row as a follower, which gets the same result.

A greedy request may carry a `draft`: the answer it is expected to give (a replay's recorded
reply). After the prompt pass the draft is fed in chunks, and each position's greedy choice is
checked against the draft's next token, as in speculative decoding; the tokens up to the first
disagreement, and the model's own token there, are taken at the cost of one pass per chunk,
which on a CPU costs about what one decode step does. The row then decodes on from there.

A caller that stops waiting cancels its request's future (asyncio cancellation of an awaiting
coroutine reaches it through `asyncio.wrap_future`): a queued request is then never admitted,
and a running one leaves the batch before the next decode step, so its place is free at once.
"""

from __future__ import annotations

import atexit
import os
import queue
import threading
from collections.abc import Callable
from concurrent.futures import Future, InvalidStateError
from dataclasses import dataclass, field, replace
from typing import Any, Literal, cast

import torch
from transformers import DynamicCache

from counterfact.agents._activations import HookPoint, HookSet, ResolvedEdit, RowPass
from counterfact.agents._constrained import TokenMask
from counterfact.agents._allocator import large_blocks_from_fresh_pages
from counterfact.agents._kv import RoomyLayer, batch_cache
from counterfact.agents._memo import ResultMemo
from counterfact.agents._prefix_cache import KV, PrefixCache


@dataclass
class Request:
    """One generation request; `logits_only` stops after the prompt pass, a `constraint`
    restricts every chosen token to those its grammar allows, and `on_token` is called on the
    engine thread with each token as it is chosen (for streaming; it must not raise or block).
    A request that may `share` is answered from the memo when it repeats one (see `_memo`);
    a greedy one's `draft` is checked instead of decoded where the model agrees with it."""

    prompt_ids: list[int]
    max_new_tokens: int
    temperature: float = 0.0
    top_p: float = 1.0
    seed: int = 0
    stop: list[str] = field(default_factory=list)
    edits: list[ResolvedEdit] = field(default_factory=list)
    capture: list[HookPoint] = field(default_factory=list)
    ignore_eos: bool = False
    logits_only: bool = False
    constraint: TokenMask | None = None
    on_token: Callable[[int], None] | None = None
    share: bool = False
    draft: list[int] = field(default_factory=list)
    future: Future[Result] = field(default_factory=Future)

    @property
    def takes_draft(self) -> bool:
        """Whether a draft can be checked for it: greedy, unconstrained, activations untouched."""
        return self.temperature == 0.0 and self.constraint is None and not self.edits and not self.capture


@dataclass
class Result:
    token_ids: list[int]
    text: str
    finish_reason: Literal["stop", "length"]
    first_logits: torch.Tensor | None = None
    activations: dict[str, torch.Tensor] = field(default_factory=dict)
    edit_hits: int = 0  # hook applications of this request's edits that changed something


@dataclass
class _Row:
    req: Request
    generator: torch.Generator | None
    key: Key | None = None  # its memo key, if its result may be shared
    generated: list[int] = field(default_factory=list)
    captures: dict[HookPoint, list[torch.Tensor]] = field(default_factory=dict)
    hits: list[int] = field(default_factory=lambda: [0])
    followers: list[Future[Result]] = field(default_factory=list)  # the same request, sent again

    @property
    def prompt_len(self) -> int:
        return len(self.req.prompt_ids)

    @property
    def futures(self) -> list[Future[Result]]:
        return [self.req.future, *self.followers]

    @property
    def wanted(self) -> bool:
        """Whether anybody still waits for this row: its own caller, or a follower's."""
        return not all(f.cancelled() for f in self.futures)

    def pass_for(self, start: int) -> RowPass:
        return RowPass(start, self.prompt_len, self.req.edits, self.captures, self.hits)


Key = tuple[object, ...]


def memo_key(req: Request) -> Key | None:
    """What a request's answer depends on (see `_memo`), or None when it may not be shared: it
    did not ask to, or its result is more than its tokens (activations, a stream, logits)."""
    if not req.share or req.edits or req.capture or req.logits_only or req.on_token is not None:
        return None
    grammar = req.constraint.key if req.constraint is not None else None
    sampling = (req.temperature, req.top_p, req.seed) if req.temperature > 0.0 else ()
    return (tuple(req.prompt_ids), req.max_new_tokens, tuple(req.stop), req.ignore_eos, grammar, sampling)


def copied(result: Result) -> Result:
    """A result that shares no list with `result`: each caller may change its own."""
    return replace(result, token_ids=list(result.token_ids), activations=dict(result.activations))


def _settle(future: Future[Result], outcome: Result | BaseException) -> None:
    """Give a request its result or error, unless it has an outcome already: its caller may
    have cancelled it at any moment (between any check and this set), or it finished earlier in
    a step that then failed. Either way nobody waits for this one, and the batch goes on."""
    try:
        if isinstance(outcome, BaseException):
            future.set_exception(outcome)
        else:
            future.set_result(outcome)
    except InvalidStateError:
        pass


def _extend(cache: DynamicCache, kv: KV) -> None:
    """Append cached keys and values (one block, or a prompt's tail) to each layer of `cache`."""
    for layer, (keys, values) in enumerate(kv):
        cache.update(keys, values, layer)


def _copied_from(cache: DynamicCache, start: int) -> KV:
    """Each layer's keys and values from position `start` on, as tensors of their own."""
    return [(layer.keys[:, :, start:].clone(), layer.values[:, :, start:].clone()) for layer in cache.layers]


def _choose(logits: torch.Tensor, row: _Row) -> int:
    """Greedy at temperature 0, otherwise top-p sampling from the row's own generator."""
    req = row.req
    if req.temperature == 0.0:
        return int(torch.argmax(logits))
    probs = torch.softmax(logits.float() / req.temperature, dim=-1)
    if req.top_p < 1.0:
        # The nucleus is found in sorted order, but drawn from in vocabulary order: near-equal
        # probabilities sort differently under float noise (a row decoded in a batch is not
        # bit-identical to the same row alone), and a draw over the sorted order would then
        # land on another token; over the vocabulary order it lands on the same one.
        sorted_probs, _ = torch.sort(probs, descending=True)
        kept = int((torch.cumsum(sorted_probs, dim=-1) - sorted_probs < req.top_p).sum())
        threshold = sorted_probs[max(kept, 1) - 1]
        probs = torch.where(probs >= threshold, probs, torch.zeros_like(probs))
    return int(torch.multinomial(probs, 1, generator=row.generator))


class Engine:
    """Owns a causal LM on a background thread and serves generation requests in batches."""

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        hooks: HookSet,
        eos_ids: set[int],
        max_batch: int = 16,
        prefix: PrefixCache | None = None,
        memo: ResultMemo[Result] | None = None,
    ) -> None:
        large_blocks_from_fresh_pages()
        self.model = model
        self.prefix = prefix or PrefixCache()
        self.memo: ResultMemo[Result] = memo if memo is not None else ResultMemo()
        self.tokenizer = tokenizer
        self.hooks = hooks
        self.eos_ids = eos_ids
        self.max_batch = max_batch
        self._queue: queue.Queue[Request | None] = queue.Queue()
        self._rows: list[_Row] = []
        self._cache: DynamicCache | None = None
        self._mask = torch.zeros(0, 0, dtype=torch.long)
        self._thread = threading.Thread(target=self._run, name="counterfact-engine", daemon=True)
        self._thread.start()
        # A model thread still alive at interpreter exit makes torch abort the process.
        atexit.register(self.close)

    @property
    def active(self) -> int:
        """Requests in the running batch now (not counting queued ones), for observers."""
        return len(self._rows)

    def submit(self, request: Request) -> Future[Result]:
        if not self._thread.is_alive():
            raise RuntimeError("the generation engine is closed")
        self._queue.put(request)
        return request.future

    def close(self) -> None:
        """Stop the thread once the requests already queued are done."""
        atexit.unregister(self.close)
        if self._thread.is_alive():
            self._queue.put(None)
            self._thread.join()

    # --- the loop, on the engine thread -------------------------------------------------------

    def _run(self) -> None:
        # Two busy threads on two cores; more only contend with the caller's threads.
        torch.set_num_threads(max(1, min(torch.get_num_threads(), os.cpu_count() or 1)))
        with torch.inference_mode():
            while True:
                incoming: list[Request | None] = []
                if not self._rows:
                    incoming.append(self._queue.get())
                while len(self._rows) + len(incoming) < self.max_batch:
                    try:
                        incoming.append(self._queue.get_nowait())
                    except queue.Empty:
                        break
                for req in incoming:
                    if req is None:
                        self._drain()
                        return
                    if req.future.cancelled():
                        continue
                    try:
                        self._admit(req)
                    except Exception as exc:  # noqa: BLE001 - the caller gets it, the loop goes on
                        _settle(req.future, exc)
                if self._rows:
                    try:
                        self._step()
                    except Exception as exc:  # noqa: BLE001 - fail the batch, keep the thread
                        for row in self._rows:
                            for future in row.futures:
                                _settle(future, exc)
                        self._reset()

    def _drain(self) -> None:
        while self._rows:
            self._step()

    def _admit(self, req: Request) -> None:
        """Answer a repeated request from the memo or the row already decoding it; otherwise run
        its prompt pass and add it to the batch."""
        key = memo_key(req) if self.memo.capacity > 0 else None
        if key is not None:
            if (known := self.memo.get(key)) is not None:
                _settle(req.future, copied(known))
                return
            if (running := next((row for row in self._rows if row.key == key), None)) is not None:
                running.followers.append(req.future)
                self.memo.joined += 1
                return
        generator = None
        if req.temperature > 0.0:
            generator = torch.Generator().manual_seed(req.seed)
        row = _Row(req, generator, key, captures={p: [] for p in req.capture})
        cache = DynamicCache(config=self.model.config)
        logits = self._prefill(row, cache)
        if req.logits_only:
            self._finish(row, "stop", first_logits=logits.clone())
            return
        if req.future.cancelled() or self._advance(row, logits) or self._check_draft(row, cache):
            return
        self._join(row, cache)

    def _prefill(self, row: _Row, cache: DynamicCache) -> torch.Tensor:
        """The prompt pass in fixed blocks (see `_prefix_cache`): full blocks already computed
        come from the prefix cache, and so does the partial last block with its logits when the
        same prompt was passed before, unless the request edits or reads activations."""
        ids = row.req.prompt_ids
        block = self.prefix.block
        reuse = not row.req.edits and not row.req.capture
        start = 0
        while reuse and start + block < len(ids):
            kv = self.prefix.get(ids, start + block)
            if kv is None:
                break
            _extend(cache, kv)
            start += block
        while start + block < len(ids):
            self._forward(row, cache, ids[start : start + block], start)
            if reuse:
                self.prefix.put(ids, start + block, _copied_from(cache, start))
            start += block
        if reuse and (tail := self.prefix.get_tail(ids)) is not None:
            _extend(cache, tail[0])
            return tail[1].clone()  # the caller's to mask in place
        logits = self._forward(row, cache, ids[start:], start)
        if reuse:
            self.prefix.put_tail(ids, _copied_from(cache, start), logits.clone())
        return logits

    def _forward(
        self, row: _Row, cache: DynamicCache, ids: list[int], start: int, *, every: bool = False
    ) -> torch.Tensor:
        """One prompt pass over `ids` (absolute positions from `start`); the last logits, or
        those of `every` position."""
        self.hooks.begin_pass([row.pass_for(start)])
        try:
            out = self.model(
                input_ids=torch.tensor([ids]), cache=cache, use_cache=True, logits_to_keep=len(ids) if every else 1
            )
        finally:
            self.hooks.end_pass()
        return out.logits[0] if every else out.logits[0, -1]

    def _check_draft(self, row: _Row, cache: DynamicCache) -> bool:
        """Take the request's draft as far as the model's greedy choices agree with it (see the
        module's docstring); True when the request is done (finished, or its caller left). The
        row's cache then holds the prompt and every generated token but the last, as after a
        decode step."""
        draft = row.req.draft
        if not draft or not row.req.takes_draft:
            return False
        size = 16  # a first chunk as cheap as a decode step, in case the answer differs at once
        while (at := len(row.generated) - 1) < len(draft) and row.generated[-1] == draft[at]:
            if not row.wanted:
                return True  # its caller left: nothing more to check
            chunk = draft[at : at + size]
            logits = self._forward(row, cache, chunk, row.prompt_len + at, every=True)
            for k in range(len(chunk)):
                if self._advance(row, logits[k]):
                    return True
                expected = draft[at + k + 1] if at + k + 1 < len(draft) else None
                if row.generated[-1] != expected:  # the model's own token: the draft ends here
                    cache.crop(row.prompt_len + at + k + 1 - cache.get_seq_length())  # drop the rest
                    return False
            size = self.prefix.block
        return False

    def _join(self, row: _Row, cache: DynamicCache) -> None:
        """Merge a prefilled row into the batch cache, left padding the shorter side."""
        length = cache.get_seq_length()  # its prompt, and the tokens of a draft it took
        if self._cache is None:
            self._cache, self._mask = batch_cache(cache, self.max_batch), torch.ones(1, length, dtype=torch.long)
            self._rows = [row]
            return
        for old, new in zip(self._cache.layers, cache.layers, strict=True):
            cast(RoomyLayer, old).stack_below(new.keys, new.values)
        self._mask = _stack_left(self._mask, torch.ones(1, length, dtype=torch.long))
        self._rows.append(row)

    def _step(self) -> None:
        """One decode step for every row in the batch, once cancelled rows have left it."""
        live = [b for b, row in enumerate(self._rows) if row.wanted]
        if len(live) < len(self._rows):
            self._select(live)
            if not live:
                return
        rows = self._rows
        assert self._cache is not None
        input_ids = torch.tensor([[row.generated[-1]] for row in rows])
        positions = [row.prompt_len + len(row.generated) - 1 for row in rows]
        self._mask = torch.cat([self._mask, torch.ones(len(rows), 1, dtype=torch.long)], dim=1)
        mask = None if bool(self._mask.all()) else self._mask
        self.hooks.begin_pass([row.pass_for(p) for row, p in zip(rows, positions, strict=True)])
        try:
            out = self.model(
                input_ids=input_ids,
                attention_mask=mask,
                position_ids=torch.tensor(positions)[:, None],
                cache=self._cache,
                use_cache=True,
            )
        finally:
            self.hooks.end_pass()
        logits = out.logits[:, -1]
        keep = [b for b, row in enumerate(rows) if not self._advance(row, logits[b])]
        if len(keep) < len(rows):
            self._select(keep)

    def _select(self, keep: list[int]) -> None:
        """Keep only rows `keep`, and drop leading columns that are padding in every row."""
        if not keep:
            self._reset()
            return
        self._rows = [self._rows[b] for b in keep]
        mask = self._mask[keep]
        first = int(mask.any(dim=0).long().argmax())
        self._mask = mask[:, first:]
        assert self._cache is not None
        index = torch.tensor(keep)
        for layer in self._cache.layers:
            cast(RoomyLayer, layer).select(index, first)

    def _reset(self) -> None:
        self._rows, self._cache = [], None
        self._mask = torch.zeros(0, 0, dtype=torch.long)

    def _advance(self, row: _Row, logits: torch.Tensor) -> bool:
        """Pick the row's next token; finish the request and return True when it is done."""
        req = row.req
        if req.constraint is not None:
            req.constraint.mask(logits)
        token = _choose(logits, row)
        row.generated.append(token)
        if req.on_token is not None:
            req.on_token(token)
        if req.constraint is not None:
            req.constraint.accept(token)
            if req.constraint.done:
                self._finish(row, "stop")
                return True
        if token in self.eos_ids and not req.ignore_eos:
            self._finish(row, "stop")
            return True
        if req.stop:
            text = self._decode(row.generated)
            cut = min((i for s in req.stop if (i := text.find(s)) >= 0), default=-1)
            if cut >= 0:
                self._finish(row, "stop", text=text[:cut])
                return True
        if len(row.generated) >= req.max_new_tokens:
            self._finish(row, "length")
            return True
        return False

    def _decode(self, tokens: list[int]) -> str:
        kept = [t for t in tokens if t not in self.eos_ids]
        return self.tokenizer.decode(kept, skip_special_tokens=True)

    def _finish(
        self,
        row: _Row,
        reason: Literal["stop", "length"],
        *,
        text: str | None = None,
        first_logits: torch.Tensor | None = None,
    ) -> None:
        activations = {p.name: torch.cat(chunks) for p, chunks in row.captures.items() if chunks}
        result = Result(
            token_ids=list(row.generated),
            text=self._decode(row.generated) if text is None else text,
            finish_reason=reason,
            first_logits=first_logits,
            activations=activations,
            edit_hits=row.hits[0],
        )
        if row.key is not None:
            self.memo.put(row.key, copied(result))
        for future in row.followers:
            _settle(future, copied(result))
        _settle(row.req.future, result)


def _stack_left(top: torch.Tensor, bottom: torch.Tensor) -> torch.Tensor:
    """Attention masks `top` over `bottom`, each right-aligned, with zeros (padding) on the left."""
    total = max(top.shape[-1], bottom.shape[-1])
    out = top.new_zeros(top.shape[0] + bottom.shape[0], total)
    out[: top.shape[0], total - top.shape[-1] :] = top
    out[top.shape[0] :, total - bottom.shape[-1] :] = bottom
    return out
