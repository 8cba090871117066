"""Reading the files people write by hand (workflows, suites, edits): one way to say what is
wrong with them."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from counterfact._errors import CounterfactError


def read_text_file(path: Path, what: str, error: type[CounterfactError], *, then: str = "") -> str:
    """The file's text; `error` naming the file when it is missing, unreadable or not UTF-8
    text, followed by `then` (what did not happen because of it, say)."""
    if not path.is_file():
        raise error(f"{what} file {path} does not exist{then}")
    try:
        return path.read_text(encoding="utf-8")
    except OSError as exc:
        raise error(f"{path}: cannot read: {exc.strerror}{then}") from None
    except UnicodeDecodeError as exc:
        raise error(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start}){then}") from None


def parse_yaml(text: str, source: str, error: type[CounterfactError], *, as_json: bool = False) -> Any:
    """YAML (or JSON, whose errors say where) parsed from `text`; empty text is an error."""
    try:
        data = json.loads(text) if as_json else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as exc:
        raise error(f"{source}: does not parse as {'JSON' if as_json else 'YAML'} ({' '.join(str(exc).split())})") from None
    if data is None:
        raise error(f"{source}: is empty")
    return data


def load_yaml(path: str | Path, what: str, error: type[CounterfactError]) -> Any:
    """A YAML or JSON file (by suffix) read and parsed, or `error` saying what is wrong."""
    path = Path(path)
    return parse_yaml(read_text_file(path, what, error), str(path), error, as_json=path.suffix == ".json")
