"""Log-only failure attribution: which agent, at which step, caused a failed run.

The default method, evidence, asks no model: it scores every step with signals the log shows by
itself (claims nothing grounds, tool calls that failed, criticism that follows, the step's role
and place; see `_evidence`), so it reads a log of any length whole, in milliseconds, with flat
memory. Its strongest candidates are kept in `Attribution.candidates`.

The three methods of Who&When (Zhang et al., ICML 2025) ask a model about a stored run's log,
never replaying it:

- all_at_once: the whole log in one prompt; the answer names a step and an agent.
- step_by_step: steps in order; at each one the model sees the log up to that step and says
  whether it is the decisive mistake; the first "yes" is the prediction (none: no prediction).
- binary_search: the model sees a range of steps and says which half holds the mistake; the
  range is halved until one step is left (at most ceil(log2 n) questions).

Each prediction is also stored in the run's labels, as labels["attribution"][method], so that
`score_attributions` can score it later against the imported ground truth.

Steps are shown as `[Step i] agent:` followed by their text, with the run's own step indices,
so an answer is an index into the run and scores against the label exactly. Nothing from the
run's labels is ever shown. A predicted agent is matched against the run's agents ignoring case
and punctuation; an all-at-once answer that names a step but no known agent is attributed to
that step's author. An answer that cannot be read is asked again once, with a reminder of the
format; a second failure, or a model error, is recorded in `Attribution.errors`.

Fitting the context. The prompt budget is the model's `context_window` minus room for the
answer and for one retry (or `max_prompt_tokens` if smaller), counted with the model's own
`prompt_ids` when it has one and estimated as characters / 4 otherwise (no budget at all for
a model with neither). A log that does not fit is read in pieces, never shortened: it is split
into consecutive pieces of whole steps, each as long as fits, and no step is left out.
- all_at_once asks about each piece in turn ("which step here is the decisive mistake, or
  none?"); the pieces' candidates are then shown side by side in one final prompt, which names
  the step and the agent (a single candidate is the answer without it; candidates that do not
  fit together are compared in consecutive groups that do, then the groups' winners).
- binary_search narrows a log that does not fit to the piece of the winning candidate (found as
  all_at_once finds it), then halves within that piece as before; later ranges always fit.
- step_by_step asks about each step with its own piece up to that step; a question about the
  first steps of a piece sees less of the past, but successive prompts share their prefix
  (a local model reuses its computed keys and values) and each step is still asked once.
Instead of overlapping pieces, each piece prompt carries one line on what lies outside it
("steps 0 to 41 came before ..."): it costs a few tokens however long the steps are, needs no
model call (a small judge's summary would be noise), and no step is shown, judged or paid for
twice. Only a step too long for a prompt by itself (or candidates too long to be shown even two
at a time) has its text cut, to at most 4000, 2000, 1000, 500, then 250 characters, keeping
its head and tail around a `[... N characters cut ...]` marker. `Attribution.pieces` says how
many pieces the log was read in (1: whole), `Attribution.truncated` whether any text was cut.
"""

from __future__ import annotations

import math
import re
import threading
from collections.abc import Callable, Iterable, Sequence
from string import Template
from typing import Any, Literal, Protocol, TypeVar, runtime_checkable

from pydantic import BaseModel, Field, computed_field

from counterfact._errors import CounterfactError
from counterfact.agents import (
    ChatMessage,
    ChatModel,
    Completion,
    GenerationSettings,
    ModelError,
    UnreadableAnswer,
    ask_readable,
    shared_model,
)
from counterfact.executors import Executor, LocalExecutor, Unit, WorkerContext
from counterfact.interventions._evidence import StepEvidence, blame
from counterfact.interventions._prompts import prompt
from counterfact.store import RunRecord, StepRecord, TraceStore, output_text

JudgeMethod = Literal["all_at_once", "step_by_step", "binary_search"]  # the ones that ask a model
Method = Literal["evidence", "all_at_once", "step_by_step", "binary_search"]
METHODS: tuple[Method, ...] = ("evidence", "all_at_once", "step_by_step", "binary_search")
EVIDENCE_MODEL = "log-signals"  # what `Attribution.model` says when no model was asked
LABEL_KEY = "attribution"  # predictions live in labels["attribution"][method]

# Answer lengths per method: a step, an agent and a few words; or one word or letter.
DEFAULT_MAX_TOKENS: dict[JudgeMethod, int] = {"all_at_once": 32, "step_by_step": 6, "binary_search": 6}
_CAPS = (4000, 2000, 1000, 500, 250)  # per-step character caps, tried in order
_CHARS_PER_TOKEN = 4  # the estimate for models that cannot count their tokens
_RETRY_TOKENS = 64  # a format reminder, with the chat template's markup
_BLAME_HINT = "Step: <step number>\nAgent: <agent name>\nReason: <a few words>"
_PIECE_HINT = "Step: <step number, or None>\nAgent: <agent name>\nReason: <a few words>"
_FORMAT_HINTS: dict[JudgeMethod, str] = {"step_by_step": "Yes or No", "binary_search": "A or B"}
_labels_lock = threading.Lock()  # read-modify-write of a run's labels from worker threads
T = TypeVar("T")
S = TypeVar("S")


class Attribution(BaseModel):
    """One method's answer for one run, with what it cost and what went wrong."""

    run_id: str
    method: Method
    model: str
    agent: str | None = None
    step: int | None = None
    reason: str | None = None
    raw_outputs: list[str] = Field(default_factory=list)  # every answer, in order
    questions: int = 0  # model calls, retries included
    prompt_tokens: int = 0  # over all calls
    truncated: bool = False  # some prompt showed a step's text cut
    pieces: int = 1  # consecutive pieces the log was read in (1: whole; none is left out)
    errors: list[str] = Field(default_factory=list)
    candidates: list[StepEvidence] = Field(default_factory=list)  # evidence: strongest steps first


class AttributionScore(BaseModel):
    """Accuracy of one method's stored predictions against the runs' ground-truth labels."""

    method: Method
    runs: int = 0  # runs with a ground-truth agent
    agent_correct: int = 0
    step_runs: int = 0  # runs with a ground-truth step (a few Who&When labels have none)
    step_correct: int = 0
    unpredicted: list[str] = Field(default_factory=list)  # no prediction stored: counted wrong
    unlabelled: list[str] = Field(default_factory=list)  # no ground truth: left out
    truncated: int = 0  # runs with a stored attribution whose prompts were cut to fit
    in_pieces: int = 0  # runs with a stored attribution whose log was read in several pieces
    errors: int = 0  # runs whose attribution recorded an error

    @computed_field  # type: ignore[prop-decorator]
    @property
    def agent_accuracy(self) -> float:
        return self.agent_correct / self.runs if self.runs else 0.0

    @computed_field  # type: ignore[prop-decorator]
    @property
    def step_accuracy(self) -> float:
        return self.step_correct / self.step_runs if self.step_runs else 0.0


@runtime_checkable
class _CountsTokens(Protocol):
    """A model that knows its context and can tokenize a prompt (the local backend)."""

    context_window: int

    def prompt_ids(self, messages: list[ChatMessage]) -> list[int]: ...


class _Line(BaseModel):
    """One step as the prompts show it."""

    index: int
    agent: str
    text: str


class _Log(BaseModel):
    """What the prompts may show of a run: the task and the steps, never the labels."""

    question: str
    lines: list[_Line]

    @property
    def agents(self) -> list[str]:
        return list(dict.fromkeys(line.agent for line in self.lines))


class _Prompt(BaseModel):
    messages: list[ChatMessage]
    truncated: bool  # some step text was cut


class _Candidate(BaseModel):
    """An answer that names a step (of a piece, or of the whole log) as the decisive mistake."""

    position: int  # into the log's lines
    agent: str
    reason: str | None


class AttributeUnit(Unit):
    """One run's attribution; the worker keeps the judge model loaded between runs."""

    run_id: str
    method: Method
    model: str | None = None  # the judge's model spec (none for evidence)
    max_prompt_tokens: int | None = None
    max_tokens: int | None = None

    @property
    def label(self) -> str:
        return f"attribution of run {self.run_id[:12]} ({self.method})"

    def perform(self, context: WorkerContext, *, attempt: int = 1) -> Attribution:
        if self.method == "evidence":
            result = _evidence(context.store, self.run_id)
        else:
            spec = self.model or "embedded"
            asker = context.warm(self.asker_key, lambda: _asker(shared_model(spec), self))
            run_id, log = _load_log(context.store, self.run_id)
            result = asker.run(log, run_id)
        _store_prediction(context.store, result)  # a label: a retry overwrites, never doubles
        return result

    @property
    def asker_key(self) -> tuple[Any, ...]:
        return ("asker", self.model, self.method, self.max_prompt_tokens, self.max_tokens)


def _asker(model: ChatModel, unit: AttributeUnit) -> _Asker:
    method = _judge_method(unit.method)
    settings = GenerationSettings(max_tokens=unit.max_tokens or DEFAULT_MAX_TOKENS[method])
    # binary_search's pieces and their comparison name a step and an agent: all_at_once's room
    blame = settings if method != "binary_search" else settings.model_copy(
        update={"max_tokens": max(settings.max_tokens, DEFAULT_MAX_TOKENS["all_at_once"])})
    return _Asker(model, method, settings, blame, _prompt_limit(model, blame, unit.max_prompt_tokens))


def _judge_method(method: Method) -> JudgeMethod:
    if method == "evidence":
        raise ValueError("the evidence method asks no model")
    return method


def _evidence(store: TraceStore, run_ref: str) -> Attribution:
    """The evidence method on one stored run (its labels are never read)."""
    run = store.get_run(run_ref)
    task = run.task_input.get("question")
    found = blame(store.steps(run.id), task if isinstance(task, str) else output_text(run.task_input))
    result = Attribution(run_id=run.id, method="evidence", model=EVIDENCE_MODEL, agent=found.agent,
                         step=found.step, reason=found.reason, candidates=found.candidates)
    if found.step is None:
        result.errors.append("the run has no step that made a decision")
    return result


def attribute(
    store: TraceStore,
    run_ids: Sequence[str],
    model: ChatModel | str | None,
    method: Method,
    *,
    max_prompt_tokens: int | None = None,
    max_tokens: int | None = None,
    concurrency: int = 8,
    on_done: Callable[[Attribution], None] | None = None,
    executor: Executor | None = None,
) -> list[Attribution]:
    """Attribute each run's failure with `method`, store it in the run's labels, return all.

    Runs are worked on `concurrency` at a time here (so a local model batches their requests)
    or on `executor`; a Ray executor needs `model` as a spec. `on_done` is called as each run
    finishes (for progress bars). Results follow `run_ids`. The evidence method asks no model:
    `model` is ignored (None is fine) and nothing is loaded.
    """
    if method not in METHODS:
        raise ValueError(f"unknown attribution method {method!r}; use one of {', '.join(METHODS)}")
    judged = method != "evidence"
    if judged and model is None:
        raise CounterfactError(f"the {method} method needs a judge model")
    if judged and executor is not None and executor.kind != "local" and not isinstance(model, str):
        raise CounterfactError(f"the {executor.kind} executor needs the judge as a model spec, not a model object")
    spec = None if not judged or model is None else model if isinstance(model, str) else f"object:{id(model)}"
    units = [
        AttributeUnit(run_id=store.resolve_run_id(ref), method=method, model=spec,
                      max_prompt_tokens=max_prompt_tokens, max_tokens=max_tokens)
        for ref in run_ids
    ]
    own = executor is None
    executor = executor or LocalExecutor(store, concurrency=concurrency)
    if judged and units and model is not None and executor.kind == "local":  # the judge, loaded once
        judge = shared_model(model) if isinstance(model, str) else model
        executor.keep(units[0].asker_key, _asker(judge, units[0]))
    try:
        return executor.map(units, None if on_done is None else lambda _, result: on_done(result))
    finally:
        if own:
            executor.close()


def score_attributions(
    store: TraceStore, run_ids: Iterable[str], method: Method
) -> AttributionScore:
    """Agent and exact-step accuracy of `method`'s stored predictions on labelled runs.

    A step is right only when it equals the labelled index as an integer (the benchmark's own
    scorer matches substrings, so "12" would pass for 2). Agents compare ignoring case and
    punctuation. A labelled run without a prediction counts as wrong and is listed.
    """
    return score_predictions((store.get_run(ref) for ref in run_ids), method)


def score_predictions(runs: Iterable[RunRecord], method: Method) -> AttributionScore:
    """`score_attributions` of runs already read (their labels hold truth and predictions)."""
    score = AttributionScore(method=method)
    for run in runs:
        run_id, labels = run.id, run.labels
        truth_agent = labels.get("mistake_agent")
        if not isinstance(truth_agent, str):
            score.unlabelled.append(run_id)
            continue
        truth_step = labels.get("mistake_step")
        has_step = isinstance(truth_step, int) and not isinstance(truth_step, bool)
        score.runs += 1
        score.step_runs += has_step
        stored = labels.get(LABEL_KEY, {}).get(method)
        prediction = (
            Attribution.model_validate({**stored, "run_id": run_id, "method": method})
            if stored
            else None
        )
        if prediction is not None:
            score.truncated += prediction.truncated
            score.in_pieces += prediction.pieces > 1
            score.errors += bool(prediction.errors)
        if prediction is None or (prediction.agent is None and prediction.step is None):
            score.unpredicted.append(run_id)
            continue
        if prediction.agent is not None and _key(prediction.agent) == _key(truth_agent):
            score.agent_correct += 1
        if has_step and prediction.step == truth_step:
            score.step_correct += 1
    return score


# -- reading a run --------------------------------------------------------------------------


def _load_log(store: TraceStore, run_ref: str) -> tuple[str, _Log]:
    """The run's full id and what the prompts may show of it."""
    run = store.get_run(run_ref)
    question = run.task_input.get("question")
    if not isinstance(question, str):
        question = output_text(run.task_input)
    steps = store.steps(run.id)
    return run.id, _Log(
        question=question,
        lines=[
            _Line(index=s.index if s.index is not None else n, agent=_author(s), text=output_text(s.output))
            for n, s in enumerate(steps)
        ],
    )


def _author(step: StepRecord) -> str:
    return step.agent or step.node


def _store_prediction(store: TraceStore, result: Attribution) -> None:
    with _labels_lock:
        labels = dict(store.get_run(result.run_id).labels)
        predictions = dict(labels.get(LABEL_KEY) or {})
        predictions[result.method] = result.model_dump(mode="json", exclude={"run_id", "method"})
        labels[LABEL_KEY] = predictions
        store.set_labels(result.run_id, labels)


# -- asking ---------------------------------------------------------------------------------


def _prompt_limit(model: ChatModel, settings: GenerationSettings, cap: int | None) -> int | None:
    """How many prompt tokens fit: the context less room for an answer and one retry (the
    first answer and a format reminder), or `cap` if smaller."""
    if isinstance(model, _CountsTokens):
        window = model.context_window - 2 * settings.max_tokens - _RETRY_TOKENS
        return min(window, cap) if cap else window
    return cap


class _Asker:
    """Builds the prompts of one method, asks the model and reads its answers. It keeps nothing
    of a run once the run is done (no prompts, answers or caches), so that a worker attributing
    many logs holds no more memory after the hundredth than after the first."""

    def __init__(
        self,
        model: ChatModel,
        method: JudgeMethod,
        settings: GenerationSettings,
        blame_settings: GenerationSettings,
        limit: int | None,
    ) -> None:
        self.model = model
        self.method = method
        self.settings = settings  # the method's own questions
        self.blame_settings = blame_settings  # questions about pieces and their candidates
        self.limit = limit
        self.template = prompt(f"attribution_{method}")
        self.piece_template = prompt("attribution_piece")
        self.compare_template = prompt("attribution_compare")

    def run(self, log: _Log, run_id: str) -> Attribution:
        result = Attribution(run_id=run_id, method=self.method, model=self.model.name)
        if not log.lines:
            result.errors.append("the run has no steps")
            return result
        try:
            if self.method == "all_at_once":
                self._all_at_once(log, result)
            elif self.method == "step_by_step":
                self._step_by_step(log, result)
            else:
                self._binary_search(log, result)
        except UnreadableAnswer as exc:
            result.errors.append(f"unreadable answer after a retry: {exc}")
        except ModelError as exc:
            result.errors.append(f"model error: {exc}")
        return result

    def _all_at_once(self, log: _Log, result: Attribution) -> None:
        span = list(range(len(log.lines)))
        fields = {"question": log.question, "agents": ", ".join(log.agents), "last": str(log.lines[-1].index)}
        if len(span) > 1 and not self._fits(self._render(self.template, log, span, None, fields)):
            winner = self._read_in_pieces(log, span, result, lambda piece: self._piece_size(log, piece))[1]
        else:
            prompt = self._fit(self.template, log, span, fields)
            winner = self._ask(prompt, result, lambda text: _read_blame(text, log, span), _BLAME_HINT)
        if winner is None:
            result.reason = "no piece of the log was judged to hold the decisive mistake"
        else:
            result.agent, result.step, result.reason = winner.agent, log.lines[winner.position].index, winner.reason

    def _step_by_step(self, log: _Log, result: Attribution) -> None:
        span = list(range(len(log.lines)))
        pieces = self._split(span, lambda piece: self._count(
            self._render(self.template, log, piece, None, self._step_fields(log, piece, piece[-1])).messages))
        for number, piece in enumerate(pieces, 1):
            result.pieces = number
            for end, position in enumerate(piece, 1):
                prompt = self._fit(self.template, log, piece[:end], self._step_fields(log, piece, position))
                if self._ask(prompt, result, _read_yes_no, _FORMAT_HINTS["step_by_step"], self.settings):
                    result.agent, result.step = log.lines[position].agent, log.lines[position].index
                    return
        result.reason = "no step was judged the decisive mistake"

    def _binary_search(self, log: _Log, result: Attribution) -> None:
        lo, hi = 0, len(log.lines) - 1
        span = list(range(len(log.lines)))
        if lo < hi and not self._fits(self._render(self.template, log, span, None, _halves(log, lo, hi))):
            pieces, winner = self._read_in_pieces(
                log, span, result, lambda piece: max(self._piece_size(log, piece), self._count(
                    self._render(self.template, log, piece, None, _halves(log, piece[0], piece[-1])).messages)))
            if winner is None:
                result.reason = "no piece of the log was judged to hold the decisive mistake"
                return
            piece = next(p for p in pieces if winner.position in p)
            lo, hi = piece[0], piece[-1]
        while lo < hi:
            mid = (lo + hi) // 2
            prompt = self._fit(self.template, log, list(range(lo, hi + 1)), _halves(log, lo, hi))
            if self._ask(prompt, result, _read_half, _FORMAT_HINTS["binary_search"], self.settings) == "A":
                hi = mid
            else:
                lo = mid + 1
        result.agent, result.step = log.lines[lo].agent, log.lines[lo].index

    # -- pieces -----------------------------------------------------------------------------

    def _read_in_pieces(
        self, log: _Log, span: list[int], result: Attribution, size: Callable[[list[int]], int]
    ) -> tuple[list[list[int]], _Candidate | None]:
        """Split `span` into pieces of whole steps that fit, ask each for a candidate, then
        compare the candidates; a piece whose answer cannot be read names none (an error)."""
        pieces = self._split(span, size)
        result.pieces = len(pieces)
        candidates: list[_Candidate] = []
        for piece in pieces:
            prompt = self._fit(self.piece_template, log, piece, self._piece_fields(log, piece))
            try:
                found = self._ask(prompt, result, lambda text, p=piece: _read_candidate(text, log, p), _PIECE_HINT)
            except UnreadableAnswer as exc:
                first, last = log.lines[piece[0]].index, log.lines[piece[-1]].index
                result.errors.append(f"steps {first} to {last}: unreadable answer after a retry: {exc}")
                continue
            if found is not None:
                candidates.append(found)
        return pieces, self._compare(log, candidates, len(pieces), result)

    def _compare(
        self, log: _Log, candidates: list[_Candidate], parts: int, result: Attribution
    ) -> _Candidate | None:
        """The decisive one of the pieces' candidates, shown side by side with their reasons. When
        they do not all fit, consecutive groups that do are compared first, and their winners next
        (a knockout); only candidates too long to be shown two at a time are cut."""
        fields = {"question": log.question, "agents": ", ".join(log.agents),
                  "last": str(log.lines[-1].index), "parts": str(parts)}
        notes = {c.position: f"named by its piece{': ' + c.reason if c.reason else ''}" for c in candidates}

        def size(group: list[_Candidate]) -> int:
            shown = [c.position for c in group]
            return self._count(self._render(self.compare_template, log, shown, None, fields, notes).messages)

        def pick(group: list[_Candidate]) -> _Candidate:
            shown = [c.position for c in group]
            prompt = self._fit(self.compare_template, log, shown, fields, notes)
            return self._ask(prompt, result, lambda text: _read_blame(text, log, shown), _BLAME_HINT)

        while len(candidates) > 1:
            groups = self._split(candidates, size)
            if len(groups) == len(candidates):  # no two fit together uncut
                return pick(candidates)
            candidates = [pick(group) if len(group) > 1 else group[0] for group in groups]
        return candidates[0] if candidates else None

    def _split(self, span: list[S], size: Callable[[list[S]], int]) -> list[list[S]]:
        """`span` (steps, or candidates) cut into consecutive pieces, each the longest that fits
        by `size`, and at least one item: a step too long by itself is cut when it is shown."""
        if self.limit is None:
            return [span]
        pieces: list[list[S]] = []
        start = 0
        while start < len(span):
            lo, hi = start + 1, len(span)  # the piece's end (exclusive): the largest that fits
            while lo < hi:
                end = (lo + hi + 1) // 2
                if size(span[start:end]) <= self.limit:
                    lo = end
                else:
                    hi = end - 1
            pieces.append(span[start:lo])
            start = lo
        return pieces

    def _piece_size(self, log: _Log, piece: list[int]) -> int:
        return self._count(self._render(self.piece_template, log, piece, None, self._piece_fields(log, piece)).messages)

    def _piece_fields(self, log: _Log, piece: list[int]) -> dict[str, str]:
        first, last, end = log.lines[piece[0]].index, log.lines[piece[-1]].index, log.lines[-1].index
        around = [f"steps {log.lines[0].index} to {log.lines[piece[0] - 1].index} came before it"] if piece[0] else []
        if piece[-1] < len(log.lines) - 1:
            around.append(f"steps {log.lines[piece[-1] + 1].index} to {end} come after it")
        context = f"{' and '.join(around).capitalize()}; they are read separately." if around else ""
        return {"question": log.question, "agents": ", ".join(log.agents), "first": str(first),
                "last": str(last), "end": str(end), "context": context}

    def _step_fields(self, log: _Log, piece: list[int], position: int) -> dict[str, str]:
        line = log.lines[position]
        before = "" if not piece[0] else (
            f"Steps {log.lines[0].index} to {log.lines[piece[0] - 1].index} came before and were each judged "
            f"not the decisive mistake; the conversation goes on from step {log.lines[piece[0]].index}.\n\n")
        return {"question": log.question, "step": str(line.index), "agent": line.agent, "before": before}

    # -- prompts ----------------------------------------------------------------------------

    def _render(
        self,
        template: Template,
        log: _Log,
        span: list[int],
        cap: int | None,
        fields: dict[str, str],
        notes: dict[int, str] | None = None,
    ) -> _Prompt:
        """The prompt showing the steps at `span` (positions), each step's text cut to `cap`."""
        parts: list[str] = []
        cut = False
        for position in span:
            line = log.lines[position]
            text, was_cut = _cut(line.text, cap)
            cut |= was_cut
            note = f" ({notes[position]})" if notes and position in notes else ""
            parts.append(f"[Step {line.index}] {line.agent}{note}:\n{text}")
        content = template.substitute(fields, steps="\n\n".join(parts))
        return _Prompt(messages=[ChatMessage(role="user", content=content)], truncated=cut)

    def _fit(
        self, template: Template, log: _Log, span: list[int], fields: dict[str, str],
        notes: dict[int, str] | None = None,
    ) -> _Prompt:
        """The prompt over all of `span`, step texts cut only as far as the budget needs."""
        for cap in (None, *_CAPS):
            prompt = self._render(template, log, span, cap, fields, notes)
            if self._fits(prompt):
                return prompt
        return prompt  # too long even so: sent, and the model's error is recorded

    def _fits(self, prompt: _Prompt) -> bool:
        return self.limit is None or self._count(prompt.messages) <= self.limit

    def _count(self, messages: list[ChatMessage]) -> int:
        if isinstance(self.model, _CountsTokens):
            try:
                return len(self.model.prompt_ids(messages))
            except ModelError:  # longer than the whole context window
                return self.model.context_window
        return math.ceil(sum(len(m.content) for m in messages) / _CHARS_PER_TOKEN)

    def _ask(
        self, prompt: _Prompt, result: Attribution, read: Callable[[str], T], hint: str,
        settings: GenerationSettings | None = None,
    ) -> T:
        """Ask once; if the answer cannot be read, ask again with a format reminder."""
        result.truncated |= prompt.truncated

        def count(messages: list[ChatMessage], completion: Completion) -> None:
            result.questions += 1
            result.prompt_tokens += completion.usage.prompt_tokens or self._count(messages)
            result.raw_outputs.append(completion.text)

        reminder = "I could not read that answer. Reply in exactly this format:\n" + hint
        return ask_readable(self.model, list(prompt.messages), settings or self.blame_settings, read, reminder,
                            on_completion=count)


def _halves(log: _Log, lo: int, hi: int) -> dict[str, str]:
    """A binary-search question's fields: positions lo to hi split after their middle."""
    mid = (lo + hi) // 2
    return {"question": log.question, "lo": str(log.lines[lo].index), "mid": str(log.lines[mid].index),
            "next": str(log.lines[mid + 1].index), "hi": str(log.lines[hi].index)}


def _cut(text: str, cap: int | None) -> tuple[str, bool]:
    """`text` cut to about `cap` characters: its head and tail around a marker."""
    if cap is None or len(text) <= cap:
        return text, False
    head, tail = cap * 2 // 3, cap // 3
    return f"{text[:head]}\n[... {len(text) - head - tail} characters cut ...]\n{text[-tail:]}", True


# -- reading answers ------------------------------------------------------------------------

_STEP = re.compile(r"\bstep\b\D{0,12}?(\d+)", re.IGNORECASE)
_NUMBER = re.compile(r"(?<![\w.])\d+(?![\w.])")
_AGENT = re.compile(r"^\W*agent\W*[:=-]\s*(.+)$", re.IGNORECASE | re.MULTILINE)
_REASON = re.compile(r"^\W*reason\W*[:=-]\s*(.+)", re.IGNORECASE | re.MULTILINE | re.DOTALL)
_YES_NO = re.compile(r"\b(yes|no)\b", re.IGNORECASE)
_NONE_STEP = re.compile(r"^\W*step\W*[:=-]\s*(?:none|n/?a|no\b)", re.IGNORECASE | re.MULTILINE)
_NO_MISTAKE = re.compile(r"\bnone\b|\bno (?:decisive )?(?:mistake|error)", re.IGNORECASE)
_HALF = re.compile(r"^\W*(?:[Aa]nswer\W*)?([AB])\b")  # case-sensitive: "a" is an article


def _key(name: str) -> str:
    """Agents compare without case, spaces or punctuation (`Web Surfer` is `WebSurfer`)."""
    return re.sub(r"[^a-z0-9]", "", name.lower())


def _match_agent(text: str, agents: list[str]) -> str | None:
    """The run's agent that `text` names: the earliest mentioned, the longest on a tie."""
    flat = _key(text)
    found = [(flat.find(_key(a)), -len(_key(a)), a) for a in agents if _key(a)]
    hits = [hit for hit in found if hit[0] >= 0]
    return min(hits)[2] if hits else None


def _read_blame(text: str, log: _Log, shown: list[int]) -> _Candidate:
    """The step (one of those at positions `shown`), agent and reason an answer names."""
    by_index = {log.lines[p].index: p for p in shown}
    match = _STEP.search(text)
    numbers = _NUMBER.findall(text)
    raw = match.group(1) if match else numbers[0] if len(numbers) == 1 else None
    if raw is None or int(raw) not in by_index:
        steps = ", ".join(map(str, by_index)) if len(by_index) <= 8 else f"{min(by_index)} to {max(by_index)}"
        raise UnreadableAnswer(f"no step number shown ({steps})")
    position = by_index[int(raw)]
    named = _AGENT.search(text)
    agent = _match_agent(named.group(1), log.agents) if named else None
    agent = agent or _match_agent(_STEP.sub(" ", text), log.agents) or log.lines[position].agent
    reason = _REASON.search(text)
    return _Candidate(position=position, agent=agent, reason=reason.group(1).strip() if reason else None)


def _read_candidate(text: str, log: _Log, piece: list[int]) -> _Candidate | None:
    """A piece's answer: the step it names, or None when it says no step of it is the mistake."""
    if _NONE_STEP.search(text) or (not _NUMBER.search(text) and _NO_MISTAKE.search(text)):
        return None
    return _read_blame(text, log, piece)


def _read_yes_no(text: str) -> bool:
    match = _YES_NO.search(text)
    if match is None:
        raise UnreadableAnswer("neither yes nor no")
    return match.group(1).lower() == "yes"


def _read_half(text: str) -> str:
    match = _HALF.search(text.strip())
    if match is None:
        raise UnreadableAnswer("neither A nor B")
    return match.group(1)
