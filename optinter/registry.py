"""Model registry: every model name usable wherever a model is chosen (CLI, flows, compare)."""

from __future__ import annotations

import importlib
from typing import Callable, TypeVar

from preprocess.feature_map import FeatureMap

from .config import ModelConfig
from .models.base import CTRModel

MODELS: dict[str, Callable[[FeatureMap, ModelConfig], CTRModel]] = {}

# Modules that define models; imported lazily on first lookup so `import optinter` stays fast.
_MODEL_MODULES = (
    "optinter.models.optinter",
    "optinter.models.shallow",
    "optinter.models.deep",
    "optinter.models.autofis",
)

T = TypeVar("T", bound=Callable[..., CTRModel])


def register_model(name: str) -> Callable[[T], T]:
    """Decorator: register a model factory ``(feature_map, model_config) -> CTRModel``."""

    def deco(factory: T) -> T:
        if name in MODELS and MODELS[name] is not factory:
            raise ValueError(f"model {name!r} registered twice")
        MODELS[name] = factory
        return factory

    return deco


def _load_all() -> None:
    for mod in _MODEL_MODULES:
        try:
            importlib.import_module(mod)
        except ModuleNotFoundError as e:  # a module not written yet must not break the others
            if e.name != mod:
                raise


def available_models() -> list[str]:
    _load_all()
    return sorted(MODELS)


def build_model(name: str, feature_map: FeatureMap, cfg: ModelConfig) -> CTRModel:
    """Instantiate model ``name``; a clear error lists the known names."""
    _load_all()
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; known models: {', '.join(sorted(MODELS))}")
    model = MODELS[name](feature_map, cfg)
    model.name = name
    return model
