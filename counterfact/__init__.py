"""counterfact: record multi-agent LLM runs as replayable traces and debug them by intervention."""

__version__ = "0.1.0"
