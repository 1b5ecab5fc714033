"""Option types the commands share."""

from __future__ import annotations

import math

import click


class Seconds(click.ParamType):
    """A finite number of seconds within [min, max]: `nan` and `inf` never reach a wait loop."""

    name = "seconds"

    def __init__(self, min: float = 0.0, max: float = 86400.0) -> None:
        self.min, self.max = min, max

    def convert(self, value, param, ctx) -> float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            number = float(value)
        else:
            try:
                number = float(str(value).strip())
            except ValueError:
                self.fail(f"{value!r} is not a number of seconds", param, ctx)
        if not math.isfinite(number):
            self.fail(f"{value!r} is not a finite number of seconds", param, ctx)
        if not self.min <= number <= self.max:
            self.fail(f"{value!r} is not between {self.min:g} and {self.max:g} seconds", param, ctx)
        return number
