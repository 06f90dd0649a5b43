"""OptInter: search memorize / factorize / naive for every feature interaction, then train and score.

``optinter.load(run folder | MLflow run id | models:/NAME/VERSION)`` gives a ``Predictor``
(``optinter/predict.py``); ``.predict(raw DataFrame | raw files | encoded parquet)`` returns click
probabilities. Nothing is imported until ``load`` is called, so ``import optinter`` stays fast (and
the code fingerprints of the pipeline's stages do not depend on the scoring modules).
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = ["load"]


def load(model: Any, **kwargs: Any) -> Any:
    """A trained model ready to score raw rows: ``optinter.predict.load`` (see there)."""
    return importlib.import_module(__name__ + ".predict").load(model, **kwargs)
