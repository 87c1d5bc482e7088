"""Cameras, calibration file formats and triangulation."""

from mvpose.geometry.camera import Cameras, affine_crop_intrinsics, normalized_to_pixels, pixels_to_normalized

__all__ = ["Cameras", "affine_crop_intrinsics", "normalized_to_pixels", "pixels_to_normalized"]
