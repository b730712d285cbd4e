"""Option validation shared by the sampler and pruner registries."""

from __future__ import annotations

import reprlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Generic, TypeVar

import pydantic

from molhpo.contract.errors import InvalidArgument

T = TypeVar("T")


class Options(pydantic.BaseModel):
    """Base of option models: unknown options are errors, values are checked eagerly."""

    model_config = pydantic.ConfigDict(extra="forbid", frozen=True)


@dataclass(frozen=True)
class Component(Generic[T]):
    """A named component: its option model, how to build it, and one line about it."""

    name: str
    summary: str
    options: type[Options]
    build: Callable[..., T]


def parse_options(kind: str, component: Component[T], options: Mapping[str, object]) -> Options:
    """Validated options, or InvalidArgument naming the option and the rule."""
    try:
        return component.options.model_validate(dict(options))
    except pydantic.ValidationError as err:
        first = err.errors()[0]
        loc = ".".join(str(x) for x in first["loc"]) or "options"
        if first["type"] == "extra_forbidden":
            valid = ", ".join(component.options.model_fields) or "(none)"
            raise InvalidArgument(
                f"{kind}.options.{loc}: unknown option for {kind} {component.name!r}; "
                f"valid options: {valid}"
            ) from None
        raise InvalidArgument(
            f"{kind}.options.{loc}: {first['msg']} (got {reprlib.repr(first.get('input'))})"
        ) from None


def lookup(kind: str, registry: Mapping[str, Component[T]], name: str) -> Component[T]:
    """The component of that name, or InvalidArgument listing the valid ones."""
    try:
        return registry[name]
    except KeyError:
        raise InvalidArgument(
            f"{kind}.name: unknown {kind} {name!r}; choose one of: {', '.join(sorted(registry))}"
        ) from None


def describe(registry: Mapping[str, Component[T]]) -> list[tuple[str, str, dict[str, str]]]:
    """(name, summary, {option: 'type = default'}) for `molhpo list`."""
    rows = []
    for name, comp in sorted(registry.items()):
        opts = {}
        for opt, info in comp.options.model_fields.items():
            ann = getattr(info.annotation, "__name__", str(info.annotation))
            opts[opt] = f"{ann} = {info.default!r}"
        rows.append((name, comp.summary, opts))
    return rows
