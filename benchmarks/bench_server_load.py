"""`counterfact serve` on the embedded model under 32 concurrent clients, half of them streaming.

Run: .venv/bin/python benchmarks/bench_server_load.py            # --seconds 60 --warmup 15
Targets: no error responses; the server's resident memory after the run within 10 % of what it
was after the warm-up (a leak per request would show as growth). p50/p99 latency, time to first
token for streams and aggregate completion tokens/s are reported, not held to a target.

The server is the real CLI in a subprocess (`counterfact serve --port FREE`, bound to 127.0.0.1 by
default); every client is its own `openai.AsyncOpenAI` with its own connections. Each client
sends request after request until the time is up (the last one started in time is waited for);
a request is an error if it raises (an HTTP error status, a broken stream) or its stream ends
without a finish_reason. The warm-up is the same load, unmeasured, so the batch, its caches and
the allocator reach their steady size before the first memory reading.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import openai
from bench_local_throughput import QUESTIONS  # the same open-ended questions
from openai.types.chat import ChatCompletionMessageParam
from rich.console import Console
from rich.table import Table

MEMORY_TOLERANCE = 0.10

console = Console()


@dataclass
class Tally:
    """What the clients saw; `finished_at` is when the last request ended."""

    latencies: dict[str, list[float]] = field(default_factory=lambda: {"stream": [], "whole": []})
    first_tokens: list[float] = field(default_factory=list)
    completion_tokens: int = 0
    errors: list[str] = field(default_factory=list)
    started_at: float = 0.0
    finished_at: float = 0.0

    @property
    def requests(self) -> int:
        return sum(len(v) for v in self.latencies.values()) + len(self.errors)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def rss_bytes(pid: int) -> int:
    """Resident memory of process `pid`: psutil where installed, else /proc."""
    try:
        import psutil
    except ImportError:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        raise RuntimeError(f"no VmRSS for process {pid}") from None
    return int(psutil.Process(pid).memory_info().rss)


def start_server(port: int, log: Path) -> subprocess.Popen[bytes]:
    """The real CLI beside this interpreter, its output (an access log line a request) to `log`."""
    cli = Path(sys.executable).with_name("counterfact")
    with log.open("wb") as out:
        return subprocess.Popen([str(cli), "serve", "--port", str(port)], stdout=out, stderr=out)


def wait_ready(base_url: str, server: subprocess.Popen[bytes], timeout: float = 300.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"the server exited with {server.returncode}")
        try:
            if httpx.get(f"{base_url}/models", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.5)
    raise RuntimeError(f"the server was not ready within {timeout:.0f} s")


_SERIAL = itertools.count()


async def one_request(
    client: openai.AsyncOpenAI, question: str, stream: bool, max_tokens: int, tally: Tally
) -> None:
    started = time.monotonic()
    # Each request's prompt is its own: a repeated greedy request is answered from the engine's
    # memo, which would time the memo, not decoding.
    content = f"{question} (request {next(_SERIAL)})"
    messages: list[ChatCompletionMessageParam] = [{"role": "user", "content": content}]
    if not stream:
        reply = await client.chat.completions.create(
            model="m", messages=messages, max_tokens=max_tokens, temperature=0
        )
        if reply.usage is None or not reply.choices[0].finish_reason:
            raise ValueError("a reply without usage or finish_reason")
        tally.latencies["whole"].append(time.monotonic() - started)
        tally.completion_tokens += reply.usage.completion_tokens
        return
    chunks = await client.chat.completions.create(
        model="m", messages=messages, max_tokens=max_tokens, temperature=0,
        stream=True, stream_options={"include_usage": True},
    )
    first_token: float | None = None
    finish_reason: str | None = None
    generated = 0
    async for chunk in chunks:
        if chunk.choices:
            if chunk.choices[0].delta.content and first_token is None:
                first_token = time.monotonic() - started
            finish_reason = chunk.choices[0].finish_reason or finish_reason
        if chunk.usage is not None:
            generated = chunk.usage.completion_tokens
    if finish_reason is None or first_token is None or not generated:
        raise ValueError("a stream without content, finish_reason or usage")
    tally.latencies["stream"].append(time.monotonic() - started)
    tally.first_tokens.append(first_token)
    tally.completion_tokens += generated


async def load(
    base_url: str, clients: int, seconds: float, max_tokens: int, server_pid: int | None
) -> Tally:
    """`clients` clients, the odd ones streaming, each sending requests until `seconds` pass;
    with `server_pid`, a progress line every 10 s."""
    tally = Tally(started_at=time.monotonic())
    deadline = tally.started_at + seconds

    async def client_loop(index: int) -> None:
        client = openai.AsyncOpenAI(base_url=base_url, api_key="x", max_retries=0, timeout=600)
        sent = 0
        while time.monotonic() < deadline:
            question = QUESTIONS[(index + sent) % len(QUESTIONS)]
            try:
                await one_request(client, question, index % 2 == 1, max_tokens, tally)
            except (openai.OpenAIError, ValueError) as exc:
                tally.errors.append(f"{type(exc).__name__}: {exc}"[:200])
            sent += 1
        await client.close()

    async def report(server_pid: int) -> None:
        while True:
            await asyncio.sleep(10)
            elapsed = time.monotonic() - tally.started_at
            console.print(
                f"  [{elapsed:4.0f} s] {tally.requests} requests done, {len(tally.errors)} errors, "
                f"{tally.completion_tokens / elapsed:.1f} completion tokens/s, "
                f"server RSS {rss_bytes(server_pid) / 2**20:.0f} MiB",
                soft_wrap=True,
            )

    reporter = asyncio.create_task(report(server_pid)) if server_pid is not None else None
    await asyncio.gather(*(client_loop(i) for i in range(clients)))
    tally.finished_at = time.monotonic()
    if reporter is not None:
        reporter.cancel()
    return tally


def percentile(values: list[float], share: float) -> float:
    """Nearest-rank percentile (`share` in 0..1) of a non-empty list."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(share * len(ordered)) - 1))]


def seconds_cell(values: list[float]) -> tuple[str, str]:
    if not values:
        return "-", "-"
    return f"{percentile(values, 0.5):.2f} s", f"{percentile(values, 0.99):.2f} s"


def report(tally: Tally, args: argparse.Namespace, rss_warm: int, rss_after: int) -> None:
    elapsed = tally.finished_at - tally.started_at
    ratio = rss_after / rss_warm
    memory_ok = abs(ratio - 1.0) <= MEMORY_TOLERANCE
    table = Table(
        title=f"counterfact serve, embedded model: {args.clients} clients (half streaming), "
        f"{args.seconds:.0f} s, max_tokens {args.max_tokens}, greedy, CPU"
    )
    table.add_column("measure")
    table.add_column("value", justify="right")
    table.add_column("target")
    stream, whole = tally.latencies["stream"], tally.latencies["whole"]
    table.add_row("requests (streamed / whole)", f"{tally.requests} ({len(stream)} / {len(whole)})", "")
    table.add_row("error responses", str(len(tally.errors)), "0: " + ("PASS" if not tally.errors else "FAIL"))
    for name, values in (("latency, all", stream + whole), ("latency, streamed", stream), ("latency, whole", whole)):
        p50, p99 = seconds_cell(values)
        table.add_row(f"{name}: p50 / p99", f"{p50} / {p99}", "")
    p50, p99 = seconds_cell(tally.first_tokens)
    table.add_row("first token, streamed: p50 / p99", f"{p50} / {p99}", "")
    table.add_row("completion tokens", str(tally.completion_tokens), "")
    table.add_row("aggregate completion tokens/s", f"{tally.completion_tokens / elapsed:.1f}", "")
    table.add_row("wall time (last request included)", f"{elapsed:.1f} s", "")
    table.add_row("server RSS after warm-up", f"{rss_warm / 2**20:.0f} MiB", "")
    table.add_row("server RSS after the run", f"{rss_after / 2**20:.0f} MiB", "")
    table.add_row(
        "RSS after / after warm-up",
        f"{ratio:.3f}",
        f"within ±{MEMORY_TOLERANCE:.0%}: " + ("PASS" if memory_ok else "FAIL"),
    )
    console.print(table)
    for error in tally.errors[:5]:
        console.print(f"error: {error}", soft_wrap=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60.0, help="measured load, seconds")
    parser.add_argument("--warmup", type=float, default=15.0, help="unmeasured load first, seconds")
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--max-tokens", type=int, default=64, help="max_tokens of each request")
    args = parser.parse_args()

    port = free_port()
    base_url = f"http://127.0.0.1:{port}/v1"
    log = Path(tempfile.gettempdir()) / f"bench_server_load_{os.getpid()}.log"
    server = start_server(port, log)
    try:
        console.print(f"starting counterfact serve on {base_url} (log: {log})", soft_wrap=True)
        wait_ready(base_url, server)
        console.print(f"warm-up: {args.clients} clients for {args.warmup:.0f} s")
        warm = asyncio.run(load(base_url, args.clients, args.warmup, args.max_tokens, None))
        rss_warm = rss_bytes(server.pid)
        console.print(
            f"  warm-up done: {warm.requests} requests, {len(warm.errors)} errors; "
            f"server RSS {rss_warm / 2**20:.0f} MiB"
        )
        console.print(f"measured run: {args.clients} clients for {args.seconds:.0f} s")
        tally = asyncio.run(load(base_url, args.clients, args.seconds, args.max_tokens, server.pid))
        rss_after = rss_bytes(server.pid)
    finally:
        server.send_signal(signal.SIGINT)  # uvicorn's graceful shutdown
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
    report(tally, args, rss_warm, rss_after)


if __name__ == "__main__":
    main()
