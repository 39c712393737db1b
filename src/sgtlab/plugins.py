"""Plug-ins: models, data sets, training methods and attacks defined outside sgtlab.

Two ways in, both loaded before a name is looked up (by the registries, on the first unknown name):

- `--import MODULE` on every command (or `SGTLAB_IMPORT=mod1,mod2`): the module is imported and
  registers its objects with sgtlab's decorators (`register_model`, `register_dataset`,
  `register_method`, `register_attack`). The names go into $SGTLAB_IMPORT, so the worker processes
  of `reproduce --workers N` import them too.
- entry points of an installed package, in the groups `sgtlab.models`, `sgtlab.datasets`,
  `sgtlab.methods` and `sgtlab.attacks`. The entry point's value is a module (imported, it registers
  itself) or the object, registered under the entry point's name: a model constructor
  `(in_channels, num_classes) -> nn.Module`, a `DatasetInfo`, a method function
  `(model, x, y, cfg, ctx) -> (loss, parts)`, an `Attack` subclass.
"""
from __future__ import annotations

import importlib
import os
import types
from importlib import metadata

from sgtlab.errors import SgtlabError

GROUPS = ("sgtlab.models", "sgtlab.datasets", "sgtlab.methods", "sgtlab.attacks")
ENV = "SGTLAB_IMPORT"

_entry_points_loaded = False
_loading = False
_pending: dict[str, list[tuple[str, object]]] = {}  # group -> entry points its registry has not taken


def import_modules(names: list[str] | tuple[str, ...]) -> None:
    """Import each module (it registers its objects); a one-line error when one cannot be imported.
    The names are added to $SGTLAB_IMPORT for worker processes."""
    import sys

    if names and os.getcwd() not in sys.path:
        sys.path.append(os.getcwd())  # a module in the current folder, as `python -m` finds it
    for name in names:
        name = name.strip()
        if not name:
            continue
        try:
            importlib.import_module(name)
        except ImportError as e:
            raise SgtlabError(f"--import {name}: cannot import it ({e}); is it installed, on PYTHONPATH or "
                              f"in the current folder?") from None
        except SgtlabError:
            raise
        except Exception as e:  # a plug-in's own bug: say where, in one line
            raise SgtlabError(f"--import {name}: importing it failed: {type(e).__name__}: {e}") from None
        known = [n for n in os.environ.get(ENV, "").split(",") if n]
        if name not in known:
            os.environ[ENV] = ",".join(known + [name])


def _register(group: str, name: str, obj) -> None:
    """Keep an entry point's object for its group's registry, which takes it (`take_entry_points`)
    on its next look-up: this module imports no registry, the registries import it."""
    if isinstance(obj, types.ModuleType):
        return  # importing the module registered its objects
    _pending.setdefault(group, []).append((name, obj))


def take_entry_points(group: str) -> list[tuple[str, object]]:
    """The objects of `group`'s entry points loaded and not taken yet, as (name, object)."""
    return _pending.pop(group, [])


def load_entry_points() -> None:
    for group in GROUPS:
        for ep in metadata.entry_points(group=group):
            try:
                obj = ep.load()
            except Exception as e:
                dist = getattr(ep.dist, "name", "?") if getattr(ep, "dist", None) else "?"
                raise SgtlabError(f"the plug-in {ep.name!r} ({group}, package {dist}) failed to load: "
                                  f"{type(e).__name__}: {e}") from None
            _register(group, ep.name, obj)


def load_plugins() -> None:
    """Entry points (once per process) and the modules named in $SGTLAB_IMPORT."""
    global _entry_points_loaded, _loading
    if _loading:
        return  # a plug-in being imported looks a name up: what is loaded so far is what there is
    _loading = True
    try:
        if not _entry_points_loaded:
            _entry_points_loaded = True
            load_entry_points()
        import_modules([n for n in os.environ.get(ENV, "").split(",") if n])
    finally:
        _loading = False


def reset() -> None:
    """Forget that entry points were loaded (tests that install a plug-in package call this)."""
    global _entry_points_loaded
    _entry_points_loaded = False
    _pending.clear()
