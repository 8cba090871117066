"""The prompts counterfact itself writes to models, kept as text files in prompts/ beside this
module and filled one way: `string.Template` ($name), so JSON braces in a prompt need no
escaping."""

from __future__ import annotations

from functools import cache
from importlib import resources
from string import Template


@cache
def prompt(name: str) -> Template:
    """The template prompts/NAME.txt."""
    return Template(resources.files("counterfact.interventions").joinpath(f"prompts/{name}.txt").read_text(encoding="utf-8"))
