"""Reusable option groups: one decorator adds a set of typer options to any command.

The options are declared once; the command receives them collected into one
object (e.g. `tls: TlsOptions`), so no command copies an option block.
"""

from __future__ import annotations

import functools
import inspect
import typing
from collections.abc import Callable
from typing import Any

Command = Callable[..., Any]
Decorator = Callable[[Command], Command]


def option_group(
    target: str, params: list[inspect.Parameter], build: Callable[..., Any]
) -> Decorator:
    """Replace the command parameter `target` by `params`, collected by `build(**values)`."""
    names = [p.name for p in params]

    def decorate(func: Callable[..., Any]) -> Callable[..., Any]:
        # Resolve string annotations (PEP 563) in the command's own module, not here.
        hints = typing.get_type_hints(func, include_extras=True)
        sig = inspect.signature(func)
        sig = sig.replace(
            parameters=[
                p.replace(annotation=hints.get(p.name, p.annotation))
                for p in sig.parameters.values()
            ]
        )
        if target not in sig.parameters:
            raise TypeError(f"{func.__name__} has no parameter {target!r}")
        kept = [p for p in sig.parameters.values() if p.name != target]
        added = [p.replace(kind=inspect.Parameter.KEYWORD_ONLY) for p in params]

        @functools.wraps(func)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            values = {name: kwargs.pop(name) for name in names if name in kwargs}
            kwargs[target] = build(**values)
            return func(*args, **kwargs)

        wrapper.__signature__ = sig.replace(parameters=kept + added)  # type: ignore[attr-defined]
        annotations = {k: v for k, v in hints.items() if k != target}
        annotations.update({p.name: p.annotation for p in params})
        wrapper.__annotations__ = annotations
        del wrapper.__wrapped__  # typer must see the new signature, not the original
        return wrapper

    return decorate


def param(name: str, annotation: Any, default: Any) -> inspect.Parameter:
    """A keyword-only parameter for `option_group`."""
    return inspect.Parameter(
        name, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=annotation
    )
