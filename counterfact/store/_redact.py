"""Redaction of secrets before anything is written to the store.

Secrets are removed from payloads by value pattern (API keys, bearer tokens, configured
regexes, the values of secret-looking environment variables) and by key name (a dict entry
named like `api_key` or `authorization` loses its value whatever it is).
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from typing import Any

REDACTED = "[REDACTED]"

_DEFAULT_PATTERNS = [
    r"sk-[A-Za-z0-9_\-]{16,}",  # OpenAI-style keys
    r"(?i)bearer\s+[A-Za-z0-9._~+/\-]{8,}=*",  # bearer tokens
    r"AKIA[0-9A-Z]{16}",  # AWS access key ids
    r"gh[pousr]_[A-Za-z0-9]{20,}",  # GitHub tokens
    r"xox[baprs]-[A-Za-z0-9\-]{10,}",  # Slack tokens
]
_SECRET_KEY = re.compile(r"(?i)(api[_-]?key|authorization|password|passwd|secret|access[_-]?token)")
_SECRET_ENV = re.compile(r"(?i)(KEY|TOKEN|SECRET|PASSWORD)$")


class Redactor:
    """Replaces secrets in JSON-compatible values with `[REDACTED]`."""

    def __init__(self, patterns: Iterable[str] = (), *, include_env: bool = True) -> None:
        extra = [p for p in os.environ.get("COUNTERFACT_REDACT", "").split(";;") if p]
        sources = [*_DEFAULT_PATTERNS, *extra, *patterns]
        self._patterns = [re.compile(p) for p in sources]
        self._any = _alternation(sources, self._patterns)
        self._literals = sorted(
            {
                v
                for k, v in os.environ.items()
                if include_env and _SECRET_ENV.search(k) and len(v) >= 8
            },
            key=len,
            reverse=True,
        )

    def text(self, value: str) -> str:
        for literal in self._literals:
            if literal in value:
                value = value.replace(literal, REDACTED)
        if self._any is not None and self._any.search(value) is None:
            return value  # the common case: one scan instead of one per pattern
        for pattern in self._patterns:
            value = pattern.sub(REDACTED, value)
        return value

    def __call__(self, value: Any) -> Any:
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, dict):
            return {
                k: (REDACTED if _SECRET_KEY.search(str(k)) and v else self(v))
                for k, v in value.items()
            }
        if isinstance(value, list):
            return [self(v) for v in value]
        return value


def _alternation(sources: list[str], compiled: list[re.Pattern[str]]) -> re.Pattern[str] | None:
    """One pattern matching wherever any of `compiled` does, to tell in one scan that a text
    holds no secret; None when they cannot be joined safely (groups, whose numbers would shift
    under backreferences, or global flags other than a leading `(?i)`)."""
    if any(p.groups for p in compiled):
        return None
    parts = [f"(?i:{s[4:]})" if s.startswith("(?i)") else f"(?:{s})" for s in sources]
    try:
        joined = re.compile("|".join(parts))
    except re.error:
        return None
    return joined if not joined.groups else None
