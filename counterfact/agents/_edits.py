"""An activation edit as data: what to change in a local model's activations for one request.

Kept apart from `_activations` (which applies edits with torch hooks) so that reading and
checking edits, and everything that imports the agents package, does not load torch.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Literal

from pydantic import BaseModel, Field, NonNegativeInt, model_validator

from counterfact.agents._types import ModelError

if TYPE_CHECKING:
    import torch

Component = Literal["residual", "attn", "mlp", "head"]
PositionSpec = Literal["prompt", "generated", "all", "last"] | list[NonNegativeInt]
Operation = Literal["add", "set", "ablate", "scale"]


class ActivationEdit(BaseModel):
    """One edit of a local model's activations, applied to one request only.

    `add` adds vector*strength; `set` replaces the activation with the vector (a 2-D vector
    gives one row per listed position, for patching); `ablate` removes the vector's direction;
    `scale` multiplies by `strength`. The vector is given inline or as a .safetensors/.npy file.
    """

    layer: NonNegativeInt | list[NonNegativeInt]
    component: Component = "residual"
    head: NonNegativeInt | None = None
    positions: PositionSpec = "all"
    operation: Operation = "add"
    vector: list[float] | list[list[float]] | None = None
    vector_file: str | None = None
    vector_key: str | None = Field(default=None, description="tensor name in a .safetensors file")
    strength: float = 1.0

    @model_validator(mode="after")
    def _consistent(self) -> ActivationEdit:
        if (self.component == "head") != (self.head is not None):
            raise ValueError("`head` is required for component 'head' and only for it")
        if self.vector is not None and self.vector_file is not None:
            raise ValueError("give either `vector` or `vector_file`, not both")
        has_vector = self.vector is not None or self.vector_file is not None
        if self.operation != "scale" and not has_vector:
            raise ValueError(f"operation {self.operation!r} needs a vector")
        return self

    @property
    def layers(self) -> list[int]:
        return [self.layer] if isinstance(self.layer, int) else list(self.layer)

    def load_vector(self) -> torch.Tensor | None:
        """The vector as a float32 tensor (read from `vector_file` if given)."""
        import torch

        if self.vector is not None:
            return torch.tensor(self.vector, dtype=torch.float32)
        if self.vector_file is None:
            return None
        return read_vector_file(Path(self.vector_file), self.vector_key)


def read_vector_file(path: Path, key: str | None) -> torch.Tensor:
    """A steering vector from a .safetensors (one tensor, or the one named `key`) or .npy file."""
    import torch

    if not path.is_file():
        raise ModelError(f"activation vector file {path} does not exist")
    if path.suffix == ".npy":
        import numpy as np

        return torch.from_numpy(np.load(path)).to(torch.float32)
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        tensors = load_file(str(path))
        if key is None and len(tensors) == 1:
            return next(iter(tensors.values())).to(torch.float32)
        if key not in tensors:
            raise ModelError(f"{path} holds {sorted(tensors)}; set vector_key to one of them")
        return tensors[key].to(torch.float32)
    raise ModelError(f"activation vector file {path} must be .safetensors or .npy")
