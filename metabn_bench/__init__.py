"""metabn-bench: robustness of image classifiers to common corruptions, built around Meta BatchNorm."""

__version__ = "0.1.0"
