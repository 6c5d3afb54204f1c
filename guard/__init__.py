"""guard: protect photos from being animated by image-to-video diffusion models."""

__version__ = "0.1.0"
