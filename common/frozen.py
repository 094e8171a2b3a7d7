"""Immutable values without ``dataclasses``.

A frozen dataclass is what these values are; importing ``dataclasses`` (with
``inspect``) costs every process about 1 MB, so the codecs' value classes share
this small base instead. See ``tests/test_footprint.py``.
"""

from __future__ import annotations

from typing import ClassVar, Self


class Frozen:
    """An immutable value whose fields are ``__match_args__``: compared, hashed and shown
    by them, equal only to the same class (what a frozen dataclass gives, without the
    memory that importing ``dataclasses`` costs every process). Subclasses name their
    fields in ``__slots__`` and set them in ``__init__`` with ``object.__setattr__``."""

    __slots__ = ()
    __match_args__: ClassVar[tuple[str, ...]] = ()

    def _fields(self) -> tuple[object, ...]:
        return tuple([getattr(self, name) for name in self.__match_args__])

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"cannot assign to field {name!r}: {type(self).__name__} is frozen")

    def __delattr__(self, name: str) -> None:
        raise AttributeError(f"cannot delete field {name!r}: {type(self).__name__} is frozen")

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Frozen) and other.__class__ is self.__class__:
            return self._fields() == other._fields()
        return NotImplemented

    def __hash__(self) -> int:
        return hash(self._fields())

    def __repr__(self) -> str:
        args = ", ".join(f"{name}={getattr(self, name)!r}" for name in self.__match_args__)
        return f"{type(self).__qualname__}({args})"

    def __reduce__(self) -> tuple[type[Self], tuple[object, ...]]:
        return (type(self), self._fields())
