"""One registry of named model configurations (a leaf module: it imports no model).

Each model module registers its configurations beside its class, with :func:`register_model`
(a factory) or :func:`register_config` (the class and its default arguments); importing
:mod:`mvpose.models` imports every model module and so fills the registry. The model a factory
returns carries ``model.config``, a plain dict of its constructor arguments, to which
:func:`build_model` adds ``name``; so ``build_model(**model.config)`` rebuilds the same
architecture (what checkpoints store).
"""

from __future__ import annotations

from typing import Any, Callable

from torch import nn

__all__ = ["register_model", "register_config", "build_model", "list_models", "model_factory"]

_REGISTRY: dict[str, Callable[..., nn.Module]] = {}


def register_model(name: str) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    """Decorator registering a factory ``(**overrides) -> nn.Module`` under ``name``.

    Raises:
        ValueError: ``name`` is already registered.
    """

    def decorator(factory: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        if name in _REGISTRY:
            raise ValueError(f"register_model: {name!r} is already registered")
        _REGISTRY[name] = factory
        return factory

    return decorator


def register_config(name: str, cls: type[nn.Module], **defaults: Any) -> None:
    """Register ``name`` as ``cls(**defaults)``, any default overridable at :func:`build_model`."""
    def factory(**cfg: Any) -> nn.Module:
        return cls(**{**defaults, **cfg})

    factory.model_class = cls  # what config validation reads the accepted arguments from
    factory.model_defaults = dict(defaults)  # and the types of their values
    register_model(name)(factory)


def list_models() -> list[str]:
    """Registered model names, sorted."""
    return sorted(_REGISTRY)


def model_factory(name: str) -> Callable[..., nn.Module]:
    """The factory registered under ``name``.

    Raises:
        ValueError: no model is registered under ``name`` (the message lists the registered ones).
    """
    if name not in _REGISTRY:
        raise ValueError(f"build_model: unknown model {name!r}; registered: {', '.join(list_models())}")
    return _REGISTRY[name]


def build_model(name: str, **cfg: Any) -> nn.Module:
    """Build the registered model ``name`` with ``cfg`` overriding its defaults.

    The returned model's ``config`` holds ``name`` and every constructor argument.
    """
    model = model_factory(name)(**cfg)
    model.config = {"name": name, **getattr(model, "config", cfg)}
    return model
