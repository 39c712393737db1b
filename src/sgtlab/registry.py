"""A tiny name -> object registry (as timm does for models): one line registers a method,
an attack, a model or a data set, and unknown names list the valid choices. Looking up a name not
registered yet first loads the plug-ins (`sgtlab.plugins`), so user packages' names work anywhere."""
from __future__ import annotations

from typing import Callable, Generic, Iterator, TypeVar

from sgtlab.errors import SgtlabError

T = TypeVar("T")


class Registry(Generic[T]):
    def __init__(self, kind: str):
        self.kind = kind
        self._items: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        def deco(obj: T) -> T:
            if name in self._items:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            self._items[name] = obj
            return obj

        return deco

    def get(self, name: str) -> T:
        if name not in self._items:
            _load_plugins()  # a name from a plug-in package (entry points) or an --import module
        try:
            return self._items[name]
        except KeyError:
            raise SgtlabError(
                f"unknown {self.kind} {name!r}; choose one of: {', '.join(sorted(self._items))}"
            ) from None

    def names(self) -> list[str]:
        _load_plugins()
        return sorted(self._items)

    def __contains__(self, name: object) -> bool:
        if name not in self._items:
            _load_plugins()
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())


def _load_plugins() -> None:
    from sgtlab.plugins import load_plugins  # imported late: plug-ins import the registries

    load_plugins()
