"""Screenshots of the viewer's main views for docs/, taken in headless Chromium from a store
of demo runs, with an edit-and-replay and a debug session started from the pages themselves.

    .venv/bin/counterfact demo --limit 6 --db /tmp/shots.db
    .venv/bin/counterfact import whowhen ../shared/data/whowhen/Hand-Crafted --db /tmp/shots.db  # optional
    .venv/bin/python scripts/ui_screenshots.py --db /tmp/shots.db --out docs
"""

from __future__ import annotations

import argparse
import sys
import threading
import time
from pathlib import Path

import uvicorn
from playwright.sync_api import Page, sync_playwright

from counterfact.store import TraceStore
from counterfact.ui import create_app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", required=True, help="a store holding demo runs (some failed)")
    parser.add_argument("--out", default="docs", help="folder for the PNG files")
    parser.add_argument("--port", type=int, default=8791)
    parser.add_argument("--chromium", default="/usr/bin/chromium")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    store = TraceStore.open(args.db)
    failed = [r for r in store.list_runs(status="failed", workflow="demo", limit=None) if r.parent_run_id is None]
    if not failed:
        sys.exit(f"{args.db} holds no failed demo run: run `counterfact demo --db {args.db}` first")
    run = failed[0]
    server = uvicorn.Server(uvicorn.Config(create_app(store), host="127.0.0.1", port=args.port, log_level="warning"))
    threading.Thread(target=server.run, daemon=True).start()
    while not server.started:
        time.sleep(0.05)
    url = f"http://127.0.0.1:{args.port}"
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=args.chromium)
        page = browser.new_page(viewport={"width": 1440, "height": 900})
        page.set_default_timeout(900_000)

        def shot(name: str, full: bool = False) -> None:
            page.screenshot(path=str(out / f"ui-{name}.png"), full_page=full)
            print(f"wrote {out / f'ui-{name}.png'}")

        page.goto(url + "/")
        shot("runs")
        page.goto(f"{url}/runs/{run.id}")
        _open_step(page, 1)
        page.evaluate("window.scrollTo(0, 0)")
        shot("run")
        page.goto(f"{url}/runs/{run.id}/steps/1")
        shot("step")
        # edit the reporter's answer to the expected one, and replay it from the page
        page.goto(f"{url}/runs/{run.id}")
        _open_step(page, 2)
        expected = run.labels.get("task", {}).get("answer", "0")
        page.fill("#edit-text", f"kind: message\ntext: 'FINAL ANSWER: {expected}'\n")
        page.click("#replay-form button[type=submit]")
        page.wait_for_selector("#verdict")
        page.wait_for_selector("#tree li.new")
        page.locator("#tree-panel").scroll_into_view_if_needed()
        shot("replayed")
        page.goto(f"{url}/runs/{run.id}/tree")
        shot("tree")
        treatment = next(r for r in store.list_runs(parent=run.id, limit=None) if r.labels.get("arm") == "treatment")
        page.goto(f"{url}/compare?a={run.id}&b={treatment.id}")
        shot("compare")
        # a short debug session, started from the page
        page.goto(f"{url}/runs/{run.id}")
        page.fill("#debug-form input[name=strategies]", "grounded")
        page.fill("#debug-form input[name=budget]", "6")
        page.click("#debug-form button[type=submit]")
        page.wait_for_selector("#debug-job a[href^='/debug/']").click()
        page.wait_for_selector("#debug-report")
        shot("debug")
        page.goto(url + "/imports")
        shot("imports")
        browser.close()
    server.should_exit = True


def _open_step(page: Page, index: int) -> None:
    page.click(f"#timeline a[data-step='{index}']")
    page.wait_for_selector(f"#step[data-step='{index}']")


if __name__ == "__main__":
    main()
