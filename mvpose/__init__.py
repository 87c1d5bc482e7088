"""mvpose: multi-view 3D human pose estimation with token-pruned pose transformers."""

__version__ = "0.1.0"
