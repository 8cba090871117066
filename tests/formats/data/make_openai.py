"""Make the OpenAI and tau-bench files under tests/formats/data with the OpenAI SDK, offline.

A tool-calling agent loop (the one tau-bench's tool-calling agent runs) talks through the
`openai` client to a scripted chat-completions server on loopback; every reply is appended to
the conversation as the SDK gives it (`message.model_dump()`), tool results as `tool`
messages. The conversation is saved as an OpenAI message list, and two such conversations as a
tau-bench results file (tau_bench.types.EnvRunResult's fields: task_id, reward, info with the
task, traj, trial), one solved (reward 1) and one not (reward 0).

    python tests/formats/data/make_openai.py
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from openai import OpenAI

HERE = Path(__file__).parent
TOOLS = [{"type": "function", "function": {
    "name": "get_order", "description": "Look an order up by its id.",
    "parameters": {"type": "object", "properties": {"order_id": {"type": "string"}}, "required": ["order_id"]}}}]
ORDERS = {"#W100": {"status": "delivered", "item": "lamp"}, "#W200": {"status": "pending", "item": "desk"}}


def _reply(content: str | None = None, call: tuple[str, dict[str, str]] | None = None) -> dict[str, Any]:
    """One chat completion as the API returns it."""
    message: dict[str, Any] = {"role": "assistant", "content": content}
    if call is not None:
        message["tool_calls"] = [{"id": f"call_{call[1]['order_id'][2:]}", "type": "function",
                                  "function": {"name": call[0], "arguments": json.dumps(call[1])}}]
    return {"id": "chatcmpl-1", "object": "chat.completion", "created": 1765000000, "model": "gpt-4o-2024-08-06",
            "choices": [{"index": 0, "message": message, "finish_reason": "tool_calls" if call else "stop"}],
            "usage": {"prompt_tokens": 120, "completion_tokens": 18, "total_tokens": 138}}


def _serve(replies: list[dict[str, Any]]) -> tuple[ThreadingHTTPServer, str]:
    """A loopback chat-completions endpoint that answers with `replies` in order."""
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers["Content-Length"]))
            body = json.dumps(replies.pop(0)).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_port}/v1"


def converse(question: str, replies: list[dict[str, Any]], tool: Callable[[str], str]) -> list[dict[str, Any]]:
    """The agent loop: ask, run each tool call, ask again, until a reply calls no tool."""
    server, url = _serve(replies)
    client = OpenAI(base_url=url, api_key="offline", max_retries=0)
    messages: list[dict[str, Any]] = [{"role": "system", "content": "You are a retail support agent. Use tools."},
                                      {"role": "user", "content": question}]
    try:
        while True:
            reply = client.chat.completions.create(model="gpt-4o", messages=messages, tools=TOOLS)  # type: ignore[arg-type]
            message = reply.choices[0].message
            messages.append(message.model_dump())
            if not message.tool_calls:
                return messages
            for call in message.tool_calls:
                order_id = json.loads(call.function.arguments)["order_id"]
                messages.append({"role": "tool", "tool_call_id": call.id, "name": call.function.name,
                                 "content": tool(order_id)})
    finally:
        server.shutdown()


def lookup(order_id: str) -> str:
    return json.dumps(ORDERS.get(order_id, {"error": "no such order"}))


def main() -> None:
    solved = converse("Where is my order #W100?", [
        _reply(call=("get_order", {"order_id": "#W100"})), _reply("Your lamp (order #W100) was delivered.")], lookup)
    (HERE / "openai_tool_calls.json").write_text(json.dumps(solved, indent=1) + "\n")
    failed = converse("Has my desk order #W200 shipped?", [
        _reply(call=("get_order", {"order_id": "#W200"})), _reply("Yes, your desk has shipped.")], lookup)
    def task(user: str, order: str, output: str) -> dict[str, Any]:
        return {"user_id": user, "instruction": f"You want to know the status of order {order}.",
                "actions": [{"name": "get_order", "kwargs": {"order_id": order}}], "outputs": [output]}
    results = [
        {"task_id": 0, "reward": 1.0, "trial": 0, "traj": solved,
         "info": {"task": task("ann_1", "#W100", "delivered"), "source": "user", "user_cost": 0.0012,
                  "reward_info": {"reward": 1.0, "info": {"r_outputs": 1.0, "outputs": {"delivered": True}}, "actions": []}}},
        {"task_id": 1, "reward": 0.0, "trial": 0, "traj": failed,
         "info": {"task": task("bob_2", "#W200", "pending"), "source": "user", "user_cost": 0.0011,
                  "reward_info": {"reward": 0.0, "info": {"r_outputs": 0.0, "outputs": {"pending": False}}, "actions": []}}},
    ]
    (HERE / "taubench_results.json").write_text(json.dumps(results, indent=1) + "\n")
    print("wrote openai_tool_calls.json, taubench_results.json")


if __name__ == "__main__":
    main()
