"""Optimizers not in torch: GRDA (AutoFIS's architecture optimizer)."""

from .grda import GRDA

__all__ = ["GRDA"]
