"""Make the LangSmith run tree under tests/formats/data with the LangSmith SDK, offline.

A small support team is traced with `@traceable`: a root chain, a researcher agent that calls
an OpenAI model through `langsmith.wrappers.wrap_openai` (the client talks to a scripted
chat-completions server on loopback) and a lookup tool, and a writer agent that calls the model
again. The SDK sends the runs to a stand-in LangSmith API on loopback, which keeps them as
posted and patched; `Client.read_run(root, load_child_runs=True)` reads the tree back, and the
`Run` the SDK returns is saved as it dumps it (`model_dump(mode="json")`).

    python tests/formats/data/make_langsmith.py
"""

from __future__ import annotations

import json
import os
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from langsmith import Client, traceable, tracing_context
from langsmith.wrappers import wrap_openai
from openai import OpenAI

sys.path.insert(0, str(Path(__file__).parent))
from make_openai import _reply, _serve  # noqa: E402  (the scripted loopback server)

HERE = Path(__file__).parent
os.environ["LANGSMITH_ENDPOINT"] = "http://127.0.0.1:9"  # nothing the SDK sends by default leaves this machine


class LangSmithStandIn(BaseHTTPRequestHandler):
    """The few LangSmith API routes the SDK uses here: /info, runs posted, patched, read, listed."""

    runs: dict[str, dict[str, Any]] = {}

    def _answer(self, value: Any) -> None:
        body = json.dumps(value).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _body(self) -> Any:
        raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        return json.loads(raw) if raw else {}

    def do_GET(self) -> None:
        run_id = self.path.rsplit("/", 1)[-1]
        self._answer({} if self.path.endswith("/info") else self.runs[run_id])

    def do_POST(self) -> None:
        body = self._body()
        if self.path.endswith("/runs"):
            body.pop("attachments", None)  # the API answers with s3_urls, never the posted attachments
            self.runs[body["id"]] = body
            self._answer({})
        else:  # /runs/query: every run of the trace but its root, as list_runs asks
            trace = str(body.get("trace") or body.get("trace_id") or "")
            self._answer({"runs": [r for r in self.runs.values() if r["trace_id"] == trace and r.get("parent_run_id")],
                          "cursors": {"next": None}})

    def do_PATCH(self) -> None:
        self.runs[self.path.rsplit("/", 1)[-1]].update(self._body())
        self._answer({})

    def log_message(self, *args: Any) -> None:
        pass


def main() -> None:
    server, url = _serve([_reply("Order #W200 is a desk; I will look its status up."),
                          _reply("Your desk (order #W200) has shipped.")])
    client = wrap_openai(OpenAI(base_url=url, api_key="offline", max_retries=0))

    @traceable(run_type="tool", name="get_order")
    def get_order(order_id: str) -> dict[str, str]:
        return {"status": "pending", "item": "desk"}

    @traceable(run_type="chain", name="researcher")
    def researcher(question: str) -> dict[str, Any]:
        note = client.chat.completions.create(model="gpt-4o", messages=[
            {"role": "system", "content": "You research orders."}, {"role": "user", "content": question}])
        return {"note": note.choices[0].message.content, "order": get_order("#W200")}

    @traceable(run_type="chain", name="writer")
    def writer(question: str, research: dict[str, Any]) -> str:
        reply = client.chat.completions.create(model="gpt-4o", messages=[
            {"role": "system", "content": "You answer customers."},
            {"role": "user", "content": f"{question}\nResearch: {json.dumps(research)}"}])
        return reply.choices[0].message.content or ""

    @traceable(run_type="chain", name="support_team")
    def support_team(question: str) -> str:
        return writer(question, researcher(question))

    api = ThreadingHTTPServer(("127.0.0.1", 0), LangSmithStandIn)
    threading.Thread(target=api.serve_forever, daemon=True).start()
    tracer = Client(api_url=f"http://127.0.0.1:{api.server_port}", api_key="offline", auto_batch_tracing=False)
    root_id: list[str] = []
    try:
        with tracing_context(enabled=True, client=tracer, project_name="support"):
            support_team("Has my desk order #W200 shipped?", langsmith_extra={"on_end": lambda run: root_id.append(str(run.id))})
        tracer.flush()
        tree = tracer.read_run(root_id[0], load_child_runs=True).model_dump(mode="json")
    finally:
        server.shutdown()
        api.shutdown()
    (HERE / "langsmith_run_tree.json").write_text(json.dumps(tree, indent=1) + "\n")
    print(f"wrote {HERE / 'langsmith_run_tree.json'}")


if __name__ == "__main__":
    main()
