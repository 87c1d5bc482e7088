"""mvpose: multi-view 3D human pose estimation with token-pruned pose transformers."""

from __future__ import annotations

from pathlib import Path
from typing import Any

__version__ = "0.1.0"
__all__ = ["load_model"]


def load_model(path: str | Path, device: str = "cpu") -> tuple[Any, dict[str, Any]]:
    """Load any mvpose checkpoint (from `mvpose train`, or `mvpose convert-weights`) for inference.

    Args:
        path: the checkpoint file.
        device: torch device of the model.

    Returns:
        (model in eval mode, the run configuration dict: ``model``, ``dataset``, ``eval``, ...).

    Raises:
        FileNotFoundError: no such file.
        ValueError: not an mvpose checkpoint, or weights that do not fit its configuration.
    """
    from mvpose.engine.runner import load_model as _load

    return _load(path, device)
