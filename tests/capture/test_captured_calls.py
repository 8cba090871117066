"""What `CallCapture` writes down, field by field, for the model and tool calls of a step.

The model calls go through the real `ChatOpenAI` and openai SDK to counterfact's
OpenAI-compatible server on loopback (answering from a script); tools are real LangChain tools.
Cases LangChain's own models never produce (a response without generation info, token counts
only in `llm_output`, a start that names no model) drive the handler through LangChain's
callback manager; the request helpers are checked on their own.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from typing import Any

import openai
import pytest
from langchain_core.callbacks import CallbackManager
from langchain_core.language_models.fake import FakeListLLM
from langchain_core.messages import (
    AIMessage,
    FunctionMessage,
    HumanMessage,
    SystemMessage,
    ToolMessage,
)
from langchain_core.messages import ChatMessage as LangChainChatMessage
from langchain_core.outputs import ChatGeneration, Generation, LLMResult
from langchain_core.tools import ToolException, tool
from langchain_openai import ChatOpenAI
from langgraph.types import Command

from counterfact.agents import (
    ChatMessage,
    Completion,
    ScriptedChatModel,
    ToolCall,
    Usage,
    create_app,
    running_server,
)
from counterfact.capture import (
    CallCapture,
    Directives,
    ModelCallRecord,
    ModelResponse,
    StepAddress,
    StepDirectives,
    ToolCallRecord,
    _capture,
    at_step,
    collect_calls,
    directing,
    install_langchain_hooks,
    next_model_call,
    recorded_reply,
)
from counterfact.capture._capture import (
    FORCED,
    chat_message,
    model_settings,
    tool_arguments,
    tool_name,
)

MODEL = "capture-model"
KEY = "sk-capture"
SLOW = 0.06  # seconds the server takes over a "slow" request

install_langchain_hooks()  # as the recorder does: replays force responses


def _script(messages: list[ChatMessage]) -> Completion:
    last = messages[-1].content
    usage = Usage(prompt_tokens=9, completion_tokens=4)
    if last == "slow":
        time.sleep(SLOW)
    if last == "add":
        calls = [ToolCall(id="call_a", name="add", arguments={"a": 1, "b": 2}),
                 ToolCall(id="call_b", name="add", arguments={"a": 5, "b": 6})]
        return Completion(text="two sums", tool_calls=calls, usage=usage)
    if last == "cut":
        return Completion(text="cut sh", finish_reason="length", usage=usage)
    return Completion(text=f"echo: {last}", usage=usage)


@pytest.fixture(scope="module")
def base_url() -> Iterator[str]:
    with running_server(create_app(ScriptedChatModel(_script, name=MODEL))) as url:
        yield url


@pytest.fixture
def chat(base_url: str) -> ChatOpenAI:
    return ChatOpenAI(model=MODEL, base_url=base_url, api_key=KEY, max_retries=0)


def _config() -> dict[str, Any]:
    return {"callbacks": [CallCapture()]}


@tool
def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


@tool
def shout(text: str) -> str:
    """One string in, upper case out."""
    return text.upper()


@tool
def refuse(x: int) -> int:
    """Refuses, through a ToolException the tool turns into its answer."""
    raise ToolException(f"refused {x}")


refuse.handle_tool_error = True


@tool
def explode(x: int) -> int:
    """Raises."""
    raise KeyError(f"bang {x}")


@tool
def hand_over(to: str) -> Command:
    """Hands control to another agent."""
    return Command(goto=to, graph=Command.PARENT, update={"messages": [ToolMessage("over to you", tool_call_id="c1")]})


def _timed(call: ModelCallRecord | ToolCallRecord) -> None:
    assert call.latency_ms >= 0 and call.offset_ms is not None and call.offset_ms >= 0
    assert call.latency_ms < 10_000 and call.offset_ms < 60_000


# -- the request helpers -----------------------------------------------------------------------


def test_chat_message_keeps_only_the_fields_given() -> None:
    assert chat_message("user", "hi") == {"role": "user", "content": "hi"}
    assert chat_message("assistant", None) == {"role": "assistant", "content": ""}
    assert chat_message("user", [{"type": "text", "text": "x"}]) == {"role": "user", "content": [{"type": "text", "text": "x"}]}
    calls = ({"id": "c", "name": "f", "arguments": {"a": 1}},)
    full = chat_message("tool", "5", name="f", tool_calls=calls, tool_call_id="c")
    assert full == {"role": "tool", "content": "5", "name": "f", "tool_calls": [{"id": "c", "name": "f", "arguments": {"a": 1}}],
                    "tool_call_id": "c"}
    assert full["tool_calls"][0] is not calls[0]  # a copy: the caller's dict is not kept
    assert chat_message("user", "", name="", tool_call_id="") == {"role": "user", "content": "", "name": "", "tool_call_id": ""}


def test_tool_name_reads_every_shape_a_request_offers_tools_in() -> None:
    assert tool_name("add") == "add"
    assert tool_name({"type": "function", "function": {"name": "add", "parameters": {}}}) == "add"
    assert tool_name({"name": "anthropic_add", "input_schema": {}}) == "anthropic_add"
    assert tool_name({"function": "not a mapping", "name": "outer"}) == "outer"
    assert tool_name({"type": "function"}) is None
    assert tool_name(add) == "add"
    assert tool_name(42) is None


def test_tool_arguments_from_inputs_json_python_literals_or_plain_text() -> None:
    inputs = {"a": 1}
    assert tool_arguments(inputs, "ignored") == {"a": 1}
    assert tool_arguments(inputs, "ignored") is not inputs
    assert tool_arguments({}, '{"a": 1}') == {}  # inputs given, even empty: the text is not read
    assert tool_arguments(None, '{"a": 1, "b": [2]}') == {"a": 1, "b": [2]}
    assert tool_arguments(None, "{'a': 1, 'b': (2, 3)}") == {"a": 1, "b": (2, 3)}  # not JSON
    assert tool_arguments(None, "[1, 2]") == {"input": "[1, 2]"}  # JSON, not an object
    assert tool_arguments(None, "hello") == {"input": "hello"}  # ValueError of both parsers
    assert tool_arguments(None, "hello world") == {"input": "hello world"}  # SyntaxError
    assert tool_arguments(None, "") == {"input": ""}


def test_model_settings_keep_decoding_settings_and_tool_names_only() -> None:
    params = {"model": "m", "temperature": 0.0, "max_tokens": 0, "seed": 0, "top_p": None, "stop": ["x"],
              "api_key": "sk-x", "headers": {"a": "b"}, "tools": [{"function": {"name": "f"}}, "g"]}
    assert model_settings(params) == {"temperature": 0.0, "max_tokens": 0, "seed": 0, "stop": ["x"], "tools": ["f", "g"]}
    assert model_settings({}) == {"tools": []}
    assert model_settings({"tools": None, "max_completion_tokens": 30}) == {"max_tokens": 30, "tools": []}
    assert model_settings({"max_tokens": 10, "max_completion_tokens": 30}) == {"max_tokens": 10, "tools": []}
    assert model_settings({"max_tokens": None, "max_completion_tokens": None}) == {"tools": []}
    assert model_settings({"max_tokens": None, "max_completion_tokens": 7}) == {"max_tokens": 7, "tools": []}


# -- model calls through ChatOpenAI --------------------------------------------------------------


def test_a_chat_model_call_is_recorded_field_by_field(chat: ChatOpenAI) -> None:
    model = chat.bind_tools([add, shout]).bind(temperature=0.3, max_completion_tokens=40, seed=5, stop=["END"])
    messages = [
        SystemMessage("be brief"),
        HumanMessage("earlier", name="alice"),
        AIMessage("", tool_calls=[{"id": "call_0", "name": "add", "args": {"a": 0, "b": 0}}]),
        ToolMessage("0", tool_call_id="call_0", name="add"),
        LangChainChatMessage(role="developer", content="mind the units"),
        HumanMessage("add"),
    ]
    with collect_calls() as calls:
        answer = model.invoke(messages, _config())
    assert [c["id"] for c in answer.tool_calls] == ["call_a", "call_b"]
    (call,) = calls.model_calls
    assert (call.backend, call.model, call.agent) == ("langchain:openai", MODEL, None)
    assert call.params == {"temperature": 0.3, "max_tokens": 40, "seed": 5, "stop": ["END"], "tools": ["add", "shout"]}
    assert call.request == [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": "earlier", "name": "alice"},
        {"role": "assistant", "content": "", "tool_calls": [{"id": "call_0", "name": "add", "arguments": {"a": 0, "b": 0}}]},
        {"role": "tool", "content": "0", "name": "add", "tool_call_id": "call_0"},
        {"role": "developer", "content": "mind the units"},
        {"role": "user", "content": "add"},
    ]
    assert call.response == {
        "content": "two sums",
        "tool_calls": [{"id": "call_a", "name": "add", "arguments": {"a": 1, "b": 2}},
                       {"id": "call_b", "name": "add", "arguments": {"a": 5, "b": 6}}],
    }
    assert (call.finish_reason, call.prompt_tokens, call.completion_tokens) == ("tool_calls", 9, 4)
    _timed(call)


def test_finish_reason_tokens_and_latency_of_plain_and_streamed_calls(chat: ChatOpenAI) -> None:
    with collect_calls() as calls:
        chat.invoke("cut", _config())
        chat.model_copy(update={"streaming": True, "stream_usage": True}).invoke("slow", _config())
        started = time.perf_counter()
        chat.invoke("slow", _config())
        took = (time.perf_counter() - started) * 1000
    cut, streamed, slow = calls.model_calls
    assert (cut.response, cut.finish_reason) == ({"content": "cut sh", "tool_calls": []}, "length")
    assert (cut.prompt_tokens, cut.completion_tokens) == (9, 4)
    assert streamed.response == {"content": "echo: slow", "tool_calls": []}
    assert (streamed.finish_reason, streamed.prompt_tokens, streamed.completion_tokens) == ("stop", 9, 4)
    for call in (streamed, slow):  # in milliseconds, from the call's start to its end
        assert SLOW * 1000 <= call.latency_ms < 10_000
    assert slow.latency_ms <= took
    for call in (cut, streamed, slow):
        _timed(call)
    assert cut.offset_ms < streamed.offset_ms < slow.offset_ms  # each from its own start
    assert slow.offset_ms >= streamed.offset_ms + streamed.latency_ms


def test_a_forced_response_is_marked_and_a_real_one_is_not(chat: ChatOpenAI) -> None:
    forced = ModelResponse(call=1, content="forced", tool_calls=[{"id": "call_f", "name": "add", "args": {"a": 7}}])
    address = StepAddress(run_id="r", node="agent", invocation=0)
    directives = Directives(steps={"agent#0": StepDirectives(model_responses=[forced])})
    model = chat.bind(temperature=0.5)
    with collect_calls() as calls, at_step(address), directing(address, directives):
        model.invoke("real", _config())
        model.invoke("replaced", _config())
    real, replaced = calls.model_calls
    assert real.params == {"temperature": 0.5, "tools": []}
    assert replaced.params == {"temperature": 0.5, "tools": [], "forced": True}
    assert replaced.request == [{"role": "user", "content": "replaced"}]
    assert replaced.response == {"content": "forced", "tool_calls": [{"id": "call_f", "name": "add", "arguments": {"a": 7}}]}
    assert (replaced.prompt_tokens, replaced.completion_tokens) == (0, 0)


def test_a_step_s_recorded_replies_are_read_in_call_order() -> None:
    address = StepAddress(run_id="r", node="agent", invocation=1)
    directives = Directives(recorded_replies={"agent#1": ["first", "second"], "agent#0": ["earlier"]})
    assert recorded_reply() is None  # outside a step
    with directing(address, directives):
        assert recorded_reply() is None  # no call counted yet
        next_model_call()
        assert recorded_reply() == "first"
        next_model_call()
        assert recorded_reply() == "second"
        next_model_call()
        assert recorded_reply() is None  # the run made two calls here
    with directing(StepAddress(run_id="r", node="other", invocation=0), directives):
        next_model_call()
        assert recorded_reply() is None


def test_a_failed_model_call_is_recorded_with_its_error(chat: ChatOpenAI) -> None:
    too_long = chat.model_copy(update={"max_tokens": 10**9})
    with collect_calls() as calls, pytest.raises(openai.BadRequestError, match="tokens is 1000000000") as raised:
        too_long.invoke("hello", _config())
    (call,) = calls.model_calls
    assert (call.backend, call.model, call.request) == ("langchain:openai", MODEL, [{"role": "user", "content": "hello"}])
    assert call.params == {"max_tokens": 10**9, "tools": []}
    assert set(call.response) == {"content", "tool_calls", "error"}
    assert (call.response["content"], call.response["tool_calls"]) == ("", [])
    assert call.response["error"] == f"{type(raised.value).__name__}: {raised.value}"
    assert call.response["error"].endswith("Error: Error code: 400 - max_completion_tokens is 1000000000; this server allows at most 2048")
    assert (call.finish_reason, call.prompt_tokens, call.completion_tokens) == ("error", 0, 0)
    _timed(call)


def test_a_plain_llm_call_is_recorded_from_its_prompt_and_text() -> None:
    llm = FakeListLLM(responses=["plain text"])
    with collect_calls() as calls:
        assert llm.invoke("a prompt", _config()) == "plain text"
    (call,) = calls.model_calls
    assert (call.backend, call.model) == ("langchain:fakelist", "")
    assert call.request == [{"role": "user", "content": "a prompt"}]
    assert call.response == {"content": "plain text", "tool_calls": []}
    assert (call.finish_reason, call.prompt_tokens, call.completion_tokens) == (None, 0, 0)
    _timed(call)


def test_self_recording_models_are_skipped(chat: ChatOpenAI) -> None:
    with collect_calls() as calls:
        chat.model_copy(update={"metadata": {"counterfact_recorded": True}}).invoke("mine", _config())
        chat.model_copy(update={"metadata": {"counterfact_recorded": False}}).invoke("theirs", _config())
    assert [c.request for c in calls.model_calls] == [[{"role": "user", "content": "theirs"}]]


# -- the handler driven through LangChain's callback manager -------------------------------------


def _manager(*captures: CallCapture) -> CallbackManager:
    return CallbackManager.configure(inheritable_callbacks=list(captures or [CallCapture()]))


def test_a_start_naming_no_provider_nor_model() -> None:
    manager = _manager()
    with collect_calls() as calls:
        (run,) = manager.on_chat_model_start({}, [[HumanMessage("hi")]])
        run.on_llm_end(LLMResult(generations=[[ChatGeneration(message=AIMessage("yo"))]]))
        (run,) = manager.on_chat_model_start(
            {"id": ["langchain", "chat_models", "Mine"]}, [[HumanMessage("hi")]], invocation_params={"model": "m-7"}
        )
        run.on_llm_end(LLMResult(generations=[[ChatGeneration(message=AIMessage("yo"))]]))
        named = CallbackManager.configure(
            inheritable_callbacks=[CallCapture()], inheritable_metadata={"ls_provider": "acme", "ls_model_name": "acme-1"}
        )
        (run,) = named.on_chat_model_start({"id": ["x", "Mine"]}, [[HumanMessage("hi")]], invocation_params={"model": "m-7"})
        run.on_llm_end(LLMResult(generations=[[ChatGeneration(message=AIMessage("yo"))]]))
    assert [(c.backend, c.model) for c in calls.model_calls] == [
        ("langchain:unknown", ""), ("langchain:Mine", "m-7"), ("langchain:acme", "acme-1")
    ]
    assert calls.model_calls[0].response == {"content": "yo", "tool_calls": []}
    assert calls.model_calls[0].request == [{"role": "user", "content": "hi"}]


def test_a_message_of_a_type_without_a_role_keeps_its_type() -> None:
    with collect_calls() as calls:
        (run,) = _manager().on_chat_model_start({}, [[FunctionMessage("42", name="answer"), HumanMessage("go")]])
        run.on_llm_end(LLMResult(generations=[[ChatGeneration(message=AIMessage("ok"))]]))
    (call,) = calls.model_calls
    assert call.request == [{"role": "function", "content": "42", "name": "answer"}, {"role": "user", "content": "go"}]


def test_finish_reason_and_tokens_from_wherever_the_model_put_them() -> None:
    manager = _manager()
    info_only = ChatGeneration(message=AIMessage("a"), generation_info={"finish_reason": "length"})
    metadata_only = ChatGeneration(message=AIMessage("b", response_metadata={"finish_reason": "content_filter"}))
    both = ChatGeneration(message=AIMessage("c", response_metadata={"finish_reason": "stop"}),
                          generation_info={"finish_reason": "tool_calls"})
    with_usage = AIMessage("d", usage_metadata={"input_tokens": 12, "output_tokens": 5, "total_tokens": 17})
    results = [
        LLMResult(generations=[[info_only]], llm_output={"token_usage": {"prompt_tokens": 21, "completion_tokens": 8}}),
        LLMResult(generations=[[metadata_only]], llm_output={"token_usage": {"prompt_tokens": None, "completion_tokens": 3}}),
        LLMResult(generations=[[both]], llm_output={"token_usage": None}),
        LLMResult(generations=[[ChatGeneration(message=with_usage)]],
                  llm_output={"token_usage": {"prompt_tokens": 99, "completion_tokens": 99}}),
        LLMResult(generations=[[Generation(text="e", generation_info={FORCED: True, "finish_reason": "stop"})]]),
    ]
    with collect_calls() as calls:
        for result in results:
            (run,) = manager.on_chat_model_start({}, [[HumanMessage("hi")]], invocation_params={"temperature": 1.0})
            run.on_llm_end(result)
    assert [(c.response["content"], c.finish_reason, c.prompt_tokens, c.completion_tokens) for c in calls.model_calls] == [
        ("a", "length", 21, 8), ("b", "content_filter", 0, 3), ("c", "tool_calls", 0, 0), ("d", None, 12, 5),
        ("e", "stop", 0, 0),
    ]
    assert [c.params for c in calls.model_calls] == [{"temperature": 1.0, "tools": []}] * 4 + [
        {"temperature": 1.0, "tools": [], "forced": True}
    ]


def test_a_model_error_is_described_and_timed() -> None:
    manager = _manager()
    with collect_calls() as calls:
        (run,) = manager.on_llm_start({"id": ["Fake"]}, ["a prompt"], invocation_params={"model": "f", "seed": 3})
        time.sleep(0.02)
        run.on_llm_error(TimeoutError("too slow"))
    (call,) = calls.model_calls
    assert (call.backend, call.model, call.params) == ("langchain:Fake", "f", {"seed": 3, "tools": []})
    assert call.request == [{"role": "user", "content": "a prompt"}]
    assert call.response == {"content": "", "tool_calls": [], "error": "TimeoutError: too slow"}
    assert call.finish_reason == "error"
    assert 20 <= call.latency_ms < 10_000
    _timed(call)


def test_an_end_or_error_without_a_start_records_nothing() -> None:
    capture = CallCapture()
    result = LLMResult(generations=[[ChatGeneration(message=AIMessage("x"))]])
    with collect_calls() as calls:
        capture.on_llm_end(result, run_id=uuid.uuid4())
        capture.on_llm_error(ValueError("x"), run_id=uuid.uuid4())
        capture.on_tool_end("x", run_id=uuid.uuid4())
        capture.on_tool_error(ValueError("x"), run_id=uuid.uuid4())
        run_id = uuid.uuid4()
        capture.on_tool_start({"name": "t"}, "{}", run_id=run_id)
        capture.on_tool_end("once", run_id=run_id)
        capture.on_tool_end("twice", run_id=run_id)  # the second end of a run: already reported
        capture.on_tool_error(ValueError("late"), run_id=run_id)
    assert calls.model_calls == []
    assert [(c.name, c.result, c.error) for c in calls.tool_calls] == [("t", "once", None)]


def test_the_first_capture_to_see_a_start_keeps_it() -> None:
    first, second = CallCapture(), CallCapture()
    run_id = uuid.uuid4()
    with collect_calls() as calls:
        first.on_tool_start({"name": "early"}, "{}", run_id=run_id)
        time.sleep(0.03)
        second.on_tool_start({"name": "late"}, "{}", run_id=run_id)
        second.on_tool_end("done", run_id=run_id)
        first.on_tool_end("again", run_id=run_id)
    (call,) = calls.tool_calls
    assert (call.name, call.result) == ("early", "done")
    assert call.latency_ms >= 30  # from the first start


def test_a_call_reports_to_the_step_it_started_in() -> None:
    capture = CallCapture()
    run_id, model_run = uuid.uuid4(), uuid.uuid4()
    with collect_calls() as started_in:
        capture.on_tool_start({"name": "t"}, "{}", run_id=run_id)
        capture.on_chat_model_start({}, [[HumanMessage("hi")]], run_id=model_run)
    with collect_calls() as ended_in:
        capture.on_tool_end("r", run_id=run_id)
        capture.on_llm_end(LLMResult(generations=[[ChatGeneration(message=AIMessage("x"))]]), run_id=model_run)
    assert [c.result for c in started_in.tool_calls] == ["r"] and ended_in.tool_calls == []
    assert [c.response["content"] for c in started_in.model_calls] == ["x"] and ended_in.model_calls == []


def test_calls_of_a_nested_agent_name_it() -> None:
    capture = CallCapture()
    namespace = {"langgraph_checkpoint_ns": "team:1|researcher:2|agent:3"}
    tool_run, model_run = uuid.uuid4(), uuid.uuid4()
    with collect_calls() as calls:
        capture.on_tool_start({"name": "t"}, "{}", run_id=tool_run, metadata=namespace)
        capture.on_tool_end("r", run_id=tool_run)
        capture.on_chat_model_start({}, [[HumanMessage("hi")]], run_id=model_run, metadata=namespace)
        capture.on_llm_end(LLMResult(generations=[[ChatGeneration(message=AIMessage("x"))]]), run_id=model_run)
    assert [c.agent for c in calls.tool_calls] == ["researcher"]
    assert [c.agent for c in calls.model_calls] == ["researcher"]


def test_the_handler_is_inline_and_ignores_chains() -> None:
    capture = CallCapture()
    assert capture.run_inline is True and capture.ignore_chain is True
    assert capture.ignore_llm is False and capture.ignore_agent is False


# -- tool calls ------------------------------------------------------------------------------------


def test_tool_calls_are_recorded_field_by_field() -> None:
    call = {"type": "tool_call", "id": "c9", "name": "refuse", "args": {"x": 3}}
    with collect_calls() as calls:
        assert add.invoke({"a": 2, "b": 3}, _config()) == 5
        assert add.invoke({**call, "name": "add", "args": {"a": 1, "b": 1}}, _config()).content == "2"
        assert shout.invoke("hello", _config()) == "HELLO"
        answer = refuse.invoke(call, _config())
        assert (answer.status, answer.content) == ("error", "refused 3")
        assert refuse.invoke({"x": 4}, _config()) == "refused 4"  # no tool call: a plain answer
        assert isinstance(hand_over.invoke({"to": "bob"}, _config()), Command)
        with pytest.raises(KeyError):
            explode.invoke({"x": 1}, _config())
    recorded = [(c.name, c.arguments, c.result, c.error, c.handoff, c.agent) for c in calls.tool_calls]
    assert recorded == [
        ("add", {"a": 2, "b": 3}, 5, None, None, None),
        ("add", {"a": 1, "b": 1}, "2", None, None, None),
        ("shout", {"input": "hello"}, "HELLO", None, None, None),
        ("refuse", {"x": 3}, None, "refused 3", None, None),
        ("refuse", {"x": 4}, "refused 4", None, None, None),
        ("hand_over", {"to": "bob"}, "over to you", None, "bob", None),
        ("explode", {"x": 1}, None, "KeyError: 'bang 1'", None, None),
    ]
    for call in calls.tool_calls:
        _timed(call)


def test_tool_latency_is_in_milliseconds() -> None:
    manager = _manager()
    with collect_calls() as calls:
        run = manager.on_tool_start({"name": "wait"}, "{'s': 1}")
        time.sleep(0.03)
        run.on_tool_end(ToolMessage([{"type": "text", "text": "ok"}], tool_call_id="c"))
        run = manager.on_tool_start(None, "plain")  # type: ignore[arg-type]
        time.sleep(0.03)
        run.on_tool_error(RuntimeError("no"))
    done, failed = calls.tool_calls
    assert (done.name, done.arguments, done.result, done.error) == ("wait", {"s": 1}, [{"type": "text", "text": "ok"}], None)
    assert (failed.name, failed.arguments, failed.result, failed.error) == ("", {"input": "plain"}, None, "RuntimeError: no")
    for call in (done, failed):
        assert 30 <= call.latency_ms < 10_000


class _Clock:
    """Stands for `time` in the capture module: `perf_counter` reads the given instants."""

    def __init__(self, *readings: float) -> None:
        self.readings = list(readings)

    def perf_counter(self) -> float:
        return self.readings.pop(0)


def test_latency_and_offset_are_measured_from_the_calls_start(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each call starts 1 s after the step and lasts 250 ms, by the capture's clock: its
    latency is end minus start in milliseconds, its offset its start from the step's start."""
    capture = CallCapture()
    message = ToolMessage("failed", tool_call_id="c", status="error")
    ends: list[tuple[str, Any]] = [
        ("tool end", 7), ("tool end", message), ("tool end", hand_over.invoke({"to": "bob"})), ("tool error", OSError("x")),
        ("model end", LLMResult(generations=[[ChatGeneration(message=AIMessage("x"))]])), ("model error", OSError("y")),
    ]
    with collect_calls() as calls:
        for kind, outcome in ends:
            monkeypatch.setattr(_capture, "time", _Clock(calls.started + 1.0, calls.started + 1.25))
            run_id = uuid.uuid4()
            if kind.startswith("tool"):
                capture.on_tool_start({"name": "t"}, "not read", run_id=run_id, inputs={"a": 1})
                if kind == "tool end":
                    capture.on_tool_end(outcome, run_id=run_id)
                else:
                    capture.on_tool_error(outcome, run_id=run_id)
            else:
                capture.on_chat_model_start({}, [[HumanMessage("hi")]], run_id=run_id)
                if kind == "model end":
                    capture.on_llm_end(outcome, run_id=run_id)
                else:
                    capture.on_llm_error(outcome, run_id=run_id)
    assert [(c.result, c.error, c.handoff) for c in calls.tool_calls] == [
        (7, None, None), (None, "failed", None), ("over to you", None, "bob"), (None, "OSError: x", None)]
    assert [c.arguments for c in calls.tool_calls] == [{"a": 1}] * 4  # the inputs, not the text
    assert [c.finish_reason for c in calls.model_calls] == [None, "error"]
    for call in [*calls.tool_calls, *calls.model_calls]:
        assert call.latency_ms == pytest.approx(250.0, rel=1e-6)
        assert call.offset_ms == pytest.approx(1000.0, abs=0.01)


def test_content_blocks_are_recorded_as_the_model_gave_them() -> None:
    blocks = [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]
    with collect_calls() as calls:
        (run,) = _manager().on_chat_model_start({}, [[HumanMessage(blocks)]])
        run.on_llm_end(LLMResult(generations=[[ChatGeneration(message=AIMessage(blocks))]]))
    (call,) = calls.model_calls
    assert call.request == [{"role": "user", "content": blocks}]
    assert call.response == {"content": blocks, "tool_calls": []}  # not the text LangChain joins from them
