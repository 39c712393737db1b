"""A tiny name -> object registry (as timm does for models): one line registers a method,
an attack, a model or a data set, and unknown names list the valid choices. Looking up a name not
registered yet first loads the plug-ins (`sgtlab.plugins`), so user packages' names work anywhere: a
registry with an entry-point `group` then takes that group's objects (`add_entry_point`)."""
from __future__ import annotations

from typing import Callable, Generic, Iterator, TypeVar

from sgtlab import plugins
from sgtlab.errors import SgtlabError

T = TypeVar("T")


class Registry(Generic[T]):
    def __init__(self, kind: str, group: str | None = None):
        self.kind = kind
        self.group = group  # the entry-point group whose plug-ins register here (`plugins.GROUPS`)
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
            self._load_plugins()  # a name from a plug-in package (entry points) or an --import module
        try:
            return self._items[name]
        except KeyError:
            raise SgtlabError(
                f"unknown {self.kind} {name!r}; choose one of: {', '.join(sorted(self._items))}"
            ) from None

    def names(self) -> list[str]:
        self._load_plugins()
        return sorted(self._items)

    def __contains__(self, name: object) -> bool:
        if name not in self._items:
            self._load_plugins()
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def _load_plugins(self) -> None:
        plugins.load_plugins()
        if self.group:
            for name, obj in plugins.take_entry_points(self.group):
                self.add_entry_point(name, obj)

    def add_entry_point(self, name: str, obj: T) -> None:
        """A plug-in's object (an entry point of `group`), registered under the entry point's name."""
        if name not in self._items:
            self.register(name)(obj)
