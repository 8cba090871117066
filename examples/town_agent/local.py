"""The same app on counterfact's embedded model in this process (`ChatCounterfact`), so that
replays can edit the model's activations and prefix its answers."""

from __future__ import annotations

from counterfact.agents import ChatCounterfact
from examples.town_agent.app import TOOLS, build

graph = build(ChatCounterfact(model="embedded", temperature=0.7, max_tokens=64).bind_tools(TOOLS))
