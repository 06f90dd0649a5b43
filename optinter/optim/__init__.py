"""Optimizers not in torch: GRDA (AutoFIS's architecture optimizer) and LazyAdam (sparse
embedding tables: the rows a step touches, and only their moments)."""

from .grda import GRDA
from .lazy_adam import LazyAdam

__all__ = ["GRDA", "LazyAdam"]
