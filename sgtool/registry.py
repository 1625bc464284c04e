"""A registry of named things (run kinds, dataset formats): each registers where it is defined."""
from __future__ import annotations

from typing import Generic, TypeVar

T = TypeVar("T")


class Registry(Generic[T]):
    """Items by their `.name`; registering an equal item again is harmless, a different one under a taken name
    is an error."""

    def __init__(self, what: str) -> None:
        self.what = what
        self._items: dict[str, T] = {}

    def register(self, item: T) -> T:
        name = item.name  # type: ignore[attr-defined]
        if name in self._items and self._items[name] != item:
            raise ValueError(f"Two {self.what} are registered as '{name}'.")
        self._items[name] = item
        return item

    def unregister(self, name: str) -> None:
        """Forget an item (a test's toy one once the test is over)."""
        self._items.pop(name, None)

    def get(self, name: str) -> T | None:
        return self._items.get(name)

    def all(self) -> list[T]:
        """Every item registered so far, by name."""
        return [item for _, item in sorted(self._items.items())]
