"""cnnbench: find the best CNN for an image-classification task, and keep a comparable record of how."""

__version__ = "0.1.0"
