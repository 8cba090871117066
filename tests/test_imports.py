"""Importing what a user of remote models needs does not load torch (seconds of start-up)."""

from __future__ import annotations

import subprocess
import sys

TORCH_FREE = (
    "counterfact.capture",
    "counterfact.store",
    "counterfact.formats",
    "counterfact.graphs",
    "counterfact.agents",
    "counterfact.agents._openai",
    "counterfact.executors",
    "counterfact.interventions",
    "counterfact.ui",
    "counterfact.cli",
)


def test_the_store_graphs_openai_backend_and_cli_import_without_torch() -> None:
    code = f"import sys; import {', '.join(TORCH_FREE)}; print(sorted(m for m in ('torch', 'transformers') if m in sys.modules))"
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert loaded == "[]"


def test_a_local_model_still_loads_torch_when_asked_for() -> None:
    code = "import sys; from counterfact.agents import resolve_model, ActivationEdit; ActivationEdit(layer=0, vector=[1.0]).load_vector(); print('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip() == "True"


def test_the_public_names_load_their_backend_only_when_used() -> None:
    code = (
        "import sys; from counterfact import CounterfactError; from counterfact.agents import OpenAIChatModel; "
        "print(sorted(m for m in ('torch', 'uvicorn') if m in sys.modules)); "
        "from counterfact.agents import LocalModel, create_app; print(sorted(m for m in ('torch', 'uvicorn') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split("\n")
    assert out[:2] == ["[]", "['torch', 'uvicorn']"]
