"""counterfact: record multi-agent LLM runs as replayable traces and debug them by intervention."""

from counterfact._errors import CounterfactError

__version__ = "0.1.0"

__all__ = ["CounterfactError", "__version__"]
