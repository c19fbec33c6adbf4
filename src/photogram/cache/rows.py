"""Database rows as cached values, and back: ``RowShape`` and ``Record``.

The cache stores JSON (see ``base.read_through``). A row is stored as an object of its
columns, by name. JSON carries strings, booleans, ints of any size, floats (Python writes
the shortest text that reads back as the same float) and lists as they are; datetimes
become ISO 8601 text with their UTC offset and come back timezone-aware in UTC, as
``UtcDateTime`` hands them out. So a row read from the cache equals the row read from
the database, value for value.

What comes back is a ``Record``: read like the SQLAlchemy ``Row`` the code was written
against (``row.id``, ``row._mapping``), and read-only like it.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from datetime import UTC, datetime
from types import MappingProxyType
from typing import Any, NoReturn

from sqlalchemy import ColumnElement, DateTime
from sqlalchemy.types import TypeDecorator, TypeEngine


class Record:
    """A row rebuilt from the cache: columns as attributes, and ``_mapping`` like a Row."""

    __slots__ = ("_mapping",)
    _mapping: Mapping[str, Any]

    def __init__(self, values: Mapping[str, Any]) -> None:
        object.__setattr__(self, "_mapping", MappingProxyType(dict(values)))

    def __getattr__(self, name: str) -> Any:
        # Only reached for names that are not slots: guard the slot itself, or a copy made
        # without __init__ would recurse.
        if name == "_mapping":
            raise AttributeError(name)
        try:
            return self._mapping[name]
        except KeyError:
            raise AttributeError(f"a cached row has no column {name!r}") from None

    def __setattr__(self, name: str, value: object) -> NoReturn:
        raise AttributeError("a cached row is read-only")

    def __iter__(self) -> Iterator[Any]:
        return iter(self._mapping.values())

    def __len__(self) -> int:
        return len(self._mapping)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Record):
            return dict(self._mapping) == dict(other._mapping)
        return NotImplemented

    def __hash__(self) -> int:
        return hash(tuple(self._mapping.items()))

    def __repr__(self) -> str:
        fields = ", ".join(f"{k}={v!r}" for k, v in self._mapping.items())
        return f"Record({fields})"

    def _asdict(self) -> dict[str, Any]:
        return dict(self._mapping)


def _is_datetime(type_: TypeEngine[Any]) -> bool:
    if isinstance(type_, TypeDecorator):
        type_ = type_.impl_instance
    return isinstance(type_, DateTime)


def _dump_datetime(value: datetime | None) -> str | None:
    if value is None:
        return None
    if value.tzinfo is None:
        # Naive means UTC everywhere in photogram (UtcDateTime); say so in the text.
        value = value.replace(tzinfo=UTC)
    return value.isoformat()


def _load_datetime(value: str | None) -> datetime | None:
    return None if value is None else datetime.fromisoformat(value).astimezone(UTC)


class RowShape:
    """How rows of a fixed set of columns are cached: ``dump`` to a JSON-able object,
    ``load`` back to the column values."""

    def __init__(self, columns: Iterable[ColumnElement[Any]]) -> None:
        self.columns = tuple(columns)
        self.names = tuple(str(c.key) for c in self.columns)
        self._datetimes = frozenset(str(c.key) for c in self.columns if _is_datetime(c.type))

    def dump(self, row: Any) -> dict[str, Any]:
        """A row (anything with ``_mapping``, or a mapping) as a JSON-able object."""
        values = row._mapping if hasattr(row, "_mapping") else row
        return {
            name: _dump_datetime(values[name]) if name in self._datetimes else values[name]
            for name in self.names
        }

    def load(self, data: Mapping[str, Any]) -> dict[str, Any]:
        """The column values ``dump`` wrote, as the database hands them out."""
        return {
            name: _load_datetime(data[name]) if name in self._datetimes else data[name]
            for name in self.names
        }

    def record(self, data: Mapping[str, Any]) -> Record:
        return Record(self.load(data))
