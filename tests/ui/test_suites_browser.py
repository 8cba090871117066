"""Suite runs in real headless Chromium: from the navigation to the list, two picked and
compared, the fixed and broken tasks and the p-value shown, and a task's run opened."""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from .conftest import LiveViewer
from .test_suites_api import make_suite_runs

pytestmark = pytest.mark.browser


def test_pick_two_suite_runs_and_compare_them(viewer: LiveViewer, page: Any) -> None:
    a, b = make_suite_runs(viewer.store)
    page.goto(viewer.url + "/")
    page.click("header nav a[href='/suites']")
    page.wait_for_selector("#suites")
    assert page.locator("#suites tbody tr").count() == 2
    # the newest is B and the one before it A unless picked otherwise: pick them the other way round first
    page.check(f"#suites input[name=a][value='{b}']")
    page.check(f"#suites input[name=b][value='{a}']")
    page.check(f"#suites input[name=a][value='{a}']")
    page.check(f"#suites input[name=b][value='{b}']")
    page.click("#compare-suites")
    page.wait_for_selector("#suite-compare")
    url = urlsplit(page.url)
    assert (url.path, parse_qs(url.query)) == ("/suites/compare", {"a": [a], "b": [b]})
    assert page.inner_text("#suite-compare tr.change-fixed td:first-child") == "mul"
    assert page.inner_text("#suite-compare tr.change-broken td:first-child") == "sub"
    assert page.inner_text("#suite-compare tr.change-still-passing td.change") == "still passing"
    assert "p = 1" in page.inner_text("#p-value") and "exact McNemar" in page.inner_text("#p-value")
    assert "fixed 1, broken 1, unchanged 1" in page.inner_text("#suite-counts")
    (fixed_run,) = viewer.store.list_runs(labels={"suite_run": b, "task_id": "mul"})
    page.click(f"#suite-compare tr.change-fixed a[href='/runs/{fixed_run.id}']")
    page.wait_for_selector("#run")
    assert page.url.endswith(f"/runs/{fixed_run.id}")
