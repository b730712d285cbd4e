"""A refined search space: close to a parent study's best trial.

Continuous parameters search +/- ``percent`` around the best value (multiplicatively on a log
scale), clipped to the parent's range; integers keep the same relative neighbourhood, at least
one step either side; categorical parameters keep their choices (a neighbourhood has no meaning
for them). Parameters the best trial did not use (inactive conditional ones) keep their range.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

from coordinator.spec import CategoricalDist, FloatDist, IntDist, ParamSpec
from molhpo.contract.errors import InvalidArgument


def refine_space(
    params: tuple[ParamSpec, ...], best: Mapping[str, object], percent: float
) -> tuple[ParamSpec, ...]:
    """The parent's parameters with ranges narrowed around ``best``."""
    if not (math.isfinite(percent) and 0 < percent <= 100):
        raise InvalidArgument(f"percent: is {percent}, but must be in (0, 100]")
    f = percent / 100.0
    out = []
    for p in params:
        v = best.get(p.name)
        d = p.distribution
        if v is None or isinstance(d, CategoricalDist) or isinstance(v, bool | str):
            out.append(p)
            continue
        x = float(v)  # type: ignore[arg-type]
        if isinstance(d, FloatDist):
            if d.log:
                lo, hi = x / (1 + f), x * (1 + f)
            else:
                width = abs(x) * f or (d.high - d.low) * f
                lo, hi = x - width, x + width
            lo, hi = max(lo, d.low), min(hi, d.high)
            if d.step:
                # Stay on the parent's grid so the best value itself remains reachable.
                lo = d.low + math.floor((lo - d.low) / d.step + 1e-9) * d.step
                hi = d.low + math.ceil((hi - d.low) / d.step - 1e-9) * d.step
                hi = min(hi, d.high)
            out.append(ParamSpec(p.name, FloatDist(lo, hi, d.step, d.log), p.condition))
        elif isinstance(d, IntDist):
            reach = max(d.step, math.ceil(abs(x) * f))
            lo = max(d.low, int(x) - reach)
            hi = min(d.high, int(x) + reach)
            if d.step > 1:
                lo = d.low + (lo - d.low) // d.step * d.step
            out.append(ParamSpec(p.name, IntDist(lo, hi, d.step, d.log), p.condition))
    return tuple(out)
