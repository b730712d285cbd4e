"""Option validation shared by the sampler and pruner registries."""

from __future__ import annotations

import importlib.util
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
    requires: tuple[str, ...] = ()
    """Top-level modules it computes with beyond the coordinator extra (GPSampler: torch)."""

    def missing(self) -> tuple[str, ...]:
        """The modules of ``requires`` this installation lacks (looked up, never imported)."""
        return tuple(m for m in self.requires if importlib.util.find_spec(m) is None)


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


def available(registry: Mapping[str, Component[T]]) -> dict[str, Component[T]]:
    """The components this installation can run: those whose ``requires`` are installed."""
    return {name: comp for name, comp in registry.items() if not comp.missing()}


def lookup(kind: str, registry: Mapping[str, Component[T]], name: str) -> Component[T]:
    """The component of that name, or InvalidArgument listing the valid ones; one that needs a
    package this installation lacks is refused with what to install."""
    try:
        comp = registry[name]
    except KeyError:
        raise InvalidArgument(
            f"{kind}.name: unknown {kind} {name!r}; choose one of: "
            f"{', '.join(sorted(available(registry)))}"
        ) from None
    missing = comp.missing()
    if missing:
        raise InvalidArgument(
            f"{kind}.name: {kind} {name!r} computes with {', '.join(missing)}, which this "
            f"coordinator lacks; install it beside molhpo[coordinator] (a CPU build will do), "
            f"or choose one of: {', '.join(sorted(available(registry)))}"
        )
    return comp


def describe(registry: Mapping[str, Component[T]]) -> list[tuple[str, str, dict[str, str]]]:
    """(name, summary, {option: 'type = default'}) for `molhpo list`: the components this
    installation can run."""
    rows = []
    for name, comp in sorted(available(registry).items()):
        opts = {}
        for opt, info in comp.options.model_fields.items():
            ann = getattr(info.annotation, "__name__", str(info.annotation))
            opts[opt] = f"{ann} = {info.default!r}"
        rows.append((name, comp.summary, opts))
    return rows
