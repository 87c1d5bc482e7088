"""The one list of dataset names: each reader function registers itself beside its definition.

A leaf module (it imports no reader); importing :mod:`mvpose.data` imports every reader module
and so fills :data:`DATASETS`, the list the CLI offers and :func:`mvpose.data.build_dataset` reads.
"""

from __future__ import annotations

from typing import Callable, TypeVar

__all__ = ["DATASETS", "register_dataset", "dataset_reader", "canonical_name"]

T = TypeVar("T")

DATASETS: dict[str, Callable] = {}  # name -> reader ``(root, split, views, **options) -> Reading``, in registration order
_ALIASES: dict[str, str] = {}  # normalised alias -> name


def _normalise(name: str) -> str:
    return name.lower().replace("-", "").replace("_", "")


def register_dataset(name: str, aliases: tuple[str, ...] = ()) -> Callable[[T], T]:
    """Decorator registering a reader ``(root, split, views, **options) -> Reading`` under ``name`` (and ``aliases``).

    Raises:
        ValueError: ``name`` or an alias is already registered.
    """

    def decorator(reader: T) -> T:
        for key in (name, *aliases):
            if _normalise(key) in _ALIASES:
                raise ValueError(f"register_dataset: {key!r} is already registered")
        DATASETS[name] = reader
        for key in (name, *aliases):
            _ALIASES[_normalise(key)] = name
        return reader

    return decorator


def canonical_name(name: str) -> str:
    """The registered name of ``name`` (case, ``-`` and ``_`` ignored; aliases such as ``human36m``).

    Raises:
        KeyError: no dataset of that name (the message lists the known ones).
    """
    key = _ALIASES.get(_normalise(name))
    if key is None:
        raise KeyError(f"unknown dataset {name!r}; known datasets: {', '.join(sorted(DATASETS))}")
    return key


def dataset_reader(name: str) -> Callable:
    """The reader registered under ``name`` or one of its aliases (KeyError otherwise)."""
    return DATASETS[canonical_name(name)]
