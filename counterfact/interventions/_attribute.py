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
a model with neither). A prompt that is over budget is shrunk in two stages until it fits:
1. every shown step's text is cut to at most 4000, 2000, 1000, 500, then 250 characters,
   keeping its head and tail around a `[... N characters cut ...]` marker;
2. then whole steps are left out, least relevant first, and each gap is shown as
   `[steps a to b left out to fit the context]`. Least relevant means: for all_at_once the
   middle of the log (its start and its end are kept), for step_by_step the oldest steps (the
   step asked about is always kept: a window of recent steps), for binary_search the centres
   of the two halves (their boundaries are kept).
`Attribution.truncated` says whether any of this happened for any of the run's prompts.
"""

from __future__ import annotations

import math
import re
import threading
from collections.abc import Callable, Iterable, Sequence
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
_FORMAT_HINTS: dict[JudgeMethod, str] = {
    "all_at_once": "Step: <step number>\nAgent: <agent name>\nReason: <a few words>",
    "step_by_step": "Yes or No",
    "binary_search": "A or B",
}
_labels_lock = threading.Lock()  # read-modify-write of a run's labels from worker threads
T = TypeVar("T")


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
    truncated: bool = False  # some prompt had step text cut or steps left out
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
    truncated: bool  # some step text was cut or some steps left out


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
    return _Asker(model, method, settings, _prompt_limit(model, settings, unit.max_prompt_tokens))


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
    """Builds the prompts of one method, asks the model and reads its answers."""

    def __init__(
        self, model: ChatModel, method: JudgeMethod, settings: GenerationSettings, limit: int | None
    ) -> None:
        self.model = model
        self.method = method
        self.settings = settings
        self.limit = limit
        self.template = prompt(f"attribution_{method}")

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
        positions = list(range(len(log.lines)))
        last = len(log.lines) - 1
        prompt = self._fit(
            log,
            positions,
            lambda p: min(p, last - p),  # the middle goes first
            question=log.question,
            agents=", ".join(log.agents),
            last=str(log.lines[-1].index),
        )
        by_index = {line.index: line for line in log.lines}
        agent, step, reason = self._ask(prompt, result, lambda text: _read_blame(text, log, by_index))
        result.agent, result.step, result.reason = agent, step, reason

    def _step_by_step(self, log: _Log, result: Attribution) -> None:
        for position, line in enumerate(log.lines):
            prompt = self._fit(
                log,
                list(range(position + 1)),
                lambda p, now=position: now - p,  # the oldest go first
                question=log.question,
                step=str(line.index),
                agent=line.agent,
            )
            if self._ask(prompt, result, _read_yes_no):
                result.agent, result.step = line.agent, line.index
                return
        result.reason = "no step was judged the decisive mistake"

    def _binary_search(self, log: _Log, result: Attribution) -> None:
        lo, hi = 0, len(log.lines) - 1
        while lo < hi:
            mid = (lo + hi) // 2
            anchors = (lo, mid, mid + 1, hi)
            prompt = self._fit(
                log,
                list(range(lo, hi + 1)),
                lambda p, ends=anchors: min(abs(p - a) for a in ends),  # half centres go first
                question=log.question,
                lo=str(log.lines[lo].index),
                mid=str(log.lines[mid].index),
                next=str(log.lines[mid + 1].index),
                hi=str(log.lines[hi].index),
            )
            if self._ask(prompt, result, _read_half) == "A":
                hi = mid
            else:
                lo = mid + 1
        result.agent, result.step = log.lines[lo].agent, log.lines[lo].index

    # -- prompts ----------------------------------------------------------------------------

    def _render(
        self, log: _Log, span: list[int], shown: set[int], cap: int | None, fields: dict[str, str]
    ) -> tuple[list[ChatMessage], bool]:
        """The prompt showing `shown` of `span` (positions), each step's text cut to `cap`."""
        parts: list[str] = []
        cut = False
        gap: list[int] = []

        def close_gap() -> None:
            if gap:
                first, last = log.lines[gap[0]].index, log.lines[gap[-1]].index
                parts.append(f"[steps {first} to {last} left out to fit the context]")
                gap.clear()

        for position in span:
            if position not in shown:
                gap.append(position)
                continue
            close_gap()
            line = log.lines[position]
            text, was_cut = _cut(line.text, cap)
            cut |= was_cut
            parts.append(f"[Step {line.index}] {line.agent}:\n{text}")
        close_gap()
        content = self.template.substitute(fields, steps="\n\n".join(parts))
        return [ChatMessage(role="user", content=content)], cut or len(shown) < len(span)

    def _fit(
        self, log: _Log, span: list[int], drop_first: Callable[[int], float], **fields: str
    ) -> _Prompt:
        """The fullest prompt over `span` within the budget (see the module docstring)."""
        limit = self.limit
        every = set(span)
        for cap in (None, *_CAPS):
            messages, cut = self._render(log, span, every, cap, fields)
            if limit is None or self._count(messages) <= limit:
                return _Prompt(messages=messages, truncated=cut)
        # Leave out the fewest steps that make it fit: binary search over how many.
        order = sorted(span, key=drop_first, reverse=True)
        best: _Prompt | None = None
        low, high = 1, len(span) - 1
        while low <= high:
            dropped = (low + high) // 2
            messages, _ = self._render(log, span, set(order[dropped:]), _CAPS[-1], fields)
            if self._count(messages) <= limit:
                best = _Prompt(messages=messages, truncated=True)
                high = dropped - 1
            else:
                low = dropped + 1
        if best is None:  # even one step is too long: send it, the model reports the error
            messages, _ = self._render(log, span, {order[-1]}, _CAPS[-1], fields)
            best = _Prompt(messages=messages, truncated=True)
        return best

    def _count(self, messages: list[ChatMessage]) -> int:
        if isinstance(self.model, _CountsTokens):
            try:
                return len(self.model.prompt_ids(messages))
            except ModelError:  # longer than the whole context window
                return self.model.context_window
        return math.ceil(sum(len(m.content) for m in messages) / _CHARS_PER_TOKEN)

    def _ask(self, prompt: _Prompt, result: Attribution, read: Callable[[str], T]) -> T:
        """Ask once; if the answer cannot be read, ask again with a format reminder."""
        result.truncated |= prompt.truncated

        def count(messages: list[ChatMessage], completion: Completion) -> None:
            result.questions += 1
            result.prompt_tokens += completion.usage.prompt_tokens or self._count(messages)
            result.raw_outputs.append(completion.text)

        reminder = "I could not read that answer. Reply in exactly this format:\n" + _FORMAT_HINTS[self.method]
        return ask_readable(self.model, list(prompt.messages), self.settings, read, reminder, on_completion=count)


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


def _read_blame(
    text: str, log: _Log, by_index: dict[int, _Line]
) -> tuple[str | None, int | None, str | None]:
    """(agent, step, reason) from an all-at-once answer; the step must be one of the run's."""
    match = _STEP.search(text)
    numbers = _NUMBER.findall(text)
    raw = match.group(1) if match else numbers[0] if len(numbers) == 1 else None
    if raw is None or int(raw) not in by_index:
        raise UnreadableAnswer(f"no step number of this run (0 to {log.lines[-1].index})")
    step = int(raw)
    named = _AGENT.search(text)
    agent = _match_agent(named.group(1), log.agents) if named else None
    agent = agent or _match_agent(_STEP.sub(" ", text), log.agents) or by_index[step].agent
    reason = _REASON.search(text)
    return agent, step, reason.group(1).strip() if reason else None


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
