"""OptInter: search memorize / factorize / naive for every feature interaction, then train and score.

``optinter.load(run folder | MLflow run id | models:/NAME/VERSION)`` gives a
:class:`optinter.predict.Predictor`; ``.predict(raw DataFrame | raw files | encoded parquet)`` returns
click probabilities. Everything is imported on first use, so ``import optinter`` stays fast.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from .predict import Predictor

__all__ = ["load"]


def load(model: Any, **kwargs: Any) -> "Predictor":
    """A trained model ready to score raw rows (see :func:`optinter.predict.load`)."""
    from .predict import load as _load

    return _load(model, **kwargs)
