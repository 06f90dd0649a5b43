"""Model registry: every model name usable wherever a model is chosen (CLI, flows, compare).

* ``@register_model("fm")`` registers a factory ``(feature_map, model_config) -> CTRModel``.
* ``@register_model("optinter", needs_arch=True)`` registers a *re-train* model built from a
  searched :class:`~optinter.architecture.Architecture`: factory
  ``(feature_map, model_config, arch) -> CTRModel``.
* ``@register_search_model("optinter")`` registers the *search* variant of a model (factory
  ``(feature_map, model_config) -> CTRModel`` implementing the search-model protocol of
  :mod:`optinter.models.base`). ``optinter.stages.run_train`` runs search then re-train for
  every model that has a search variant.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Callable, TypeVar

from preprocess.feature_map import FeatureMap

from .config import ModelConfig
from .models.base import CTRModel

if TYPE_CHECKING:  # pragma: no cover
    from .architecture import Architecture

MODELS: dict[str, Callable[..., CTRModel]] = {}
SEARCH_MODELS: dict[str, Callable[[FeatureMap, ModelConfig], CTRModel]] = {}
NEEDS_ARCH: set[str] = set()

# Modules that define models; imported lazily on first lookup so `import optinter` stays fast.
_MODEL_MODULES = (
    "optinter.models.optinter",
    "optinter.models.shallow",
    "optinter.models.deep",
    "optinter.models.autofis",
)

T = TypeVar("T", bound=Callable[..., CTRModel])


def register_model(name: str, needs_arch: bool = False) -> Callable[[T], T]:
    """Decorator: register a model factory ``(feature_map, model_config[, arch]) -> CTRModel``.

    ``needs_arch=True``: the factory takes a third argument, the searched ``Architecture``.
    """

    def deco(factory: T) -> T:
        if name in MODELS and MODELS[name] is not factory:
            raise ValueError(f"model {name!r} registered twice")
        MODELS[name] = factory
        if needs_arch:
            NEEDS_ARCH.add(name)
        return factory

    return deco


def register_search_model(name: str) -> Callable[[T], T]:
    """Decorator: register the search variant ``(feature_map, model_config) -> CTRModel`` of ``name``."""

    def deco(factory: T) -> T:
        if name in SEARCH_MODELS and SEARCH_MODELS[name] is not factory:
            raise ValueError(f"search model {name!r} registered twice")
        SEARCH_MODELS[name] = factory
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


def available_search_models() -> list[str]:
    _load_all()
    return sorted(SEARCH_MODELS)


def has_search_variant(name: str) -> bool:
    """True when ``name`` is trained by search → re-train (OptInter, AutoFIS)."""
    _load_all()
    return name in SEARCH_MODELS


def needs_architecture(name: str) -> bool:
    _load_all()
    return name in NEEDS_ARCH


def build_model(
    name: str, feature_map: FeatureMap, cfg: ModelConfig, arch: "Architecture | None" = None
) -> CTRModel:
    """Instantiate model ``name``; a clear error lists the known names.

    ``arch`` is required by (and only accepted for) models registered with ``needs_arch=True``;
    it is validated against ``feature_map`` first.
    """
    _load_all()
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; known models: {', '.join(sorted(MODELS))}")
    if name in NEEDS_ARCH:
        if arch is None:
            hint = " (run the search stage first, or `train` which searches then re-trains)"
            raise ValueError(f"model {name!r} needs an architecture{hint}")
        arch.validate(feature_map)
        model = MODELS[name](feature_map, cfg, arch)
    else:
        if arch is not None:
            raise ValueError(f"model {name!r} takes no architecture")
        model = MODELS[name](feature_map, cfg)
    model.name = name
    _start_from_base_rate(model, feature_map)
    return model


def _start_from_base_rate(model: CTRModel, feature_map: FeatureMap) -> None:
    """Output bias = the train split's log-odds (when the feature map has a train split)."""
    train = feature_map.splits.get("train")
    if train is not None and train.rows > 0:
        model.init_base_rate(train.pos_ratio)


def build_search_model(name: str, feature_map: FeatureMap, cfg: ModelConfig) -> CTRModel:
    """Instantiate the search variant of ``name`` (e.g. ``"optinter"``, ``"autofis"``)."""
    _load_all()
    if name not in SEARCH_MODELS:
        known = ", ".join(sorted(SEARCH_MODELS)) or "none"
        raise ValueError(f"model {name!r} has no search variant; models with one: {known}")
    model = SEARCH_MODELS[name](feature_map, cfg)
    model.name = f"{name}_search"
    _start_from_base_rate(model, feature_map)
    return model
