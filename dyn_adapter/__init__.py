"""Dyn-Adapter: early-exit, parameter-efficiently tuned vision transformers."""

__version__ = "0.1.0"
