"""The command line's own voice where typer speaks for it: flags shown without a type in the
help, and usage errors worded by fpmon rather than by the validation library underneath.

typer 0.29 validates values with pydantic and shows its messages as they are ("Value error,
'x' is not one of ...", "Input should be greater than or equal to 1"), and its rich help gives
every flag a `<bool>` type although a flag takes no value. Both are fixed here, once, for every
command: `FlagGroup` is the class of fpmon's typer apps, and `usage_error` words a usage error.
"""

from __future__ import annotations

import enum
from typing import Any

from typer._click import Context
from typer._click.exceptions import BadParameter, MissingParameter, UsageError
from typer.core import TyperGroup


def _without_flag_types(params: list[Any]) -> list[Any]:
    for param in params:
        if getattr(param, "is_flag", False) and param.metavar is None:
            param.metavar = ""  # shown as is: a flag takes no value, so it has no type
    return params


class FlagGroup(TyperGroup):
    """A typer group whose commands (and itself) show flags without a value type in --help."""

    def get_params(self, ctx: Context) -> list[Any]:
        return _without_flag_types(super().get_params(ctx))

    def get_command(self, ctx: Context, cmd_name: str) -> Any:
        command = super().get_command(ctx, cmd_name)
        if command is not None:
            _without_flag_types(command.get_params(ctx))
        return command


def usage_error(exc: UsageError) -> str:
    """The one-line message of a usage error, in fpmon's words."""
    if not isinstance(exc, BadParameter) or isinstance(exc, MissingParameter) or not exc.param:
        return exc.format_message().strip()
    param = exc.param
    name = "/".join(param.opts)
    cause = exc.__cause__
    errors = getattr(cause, "errors", None)
    if not callable(errors):  # a message of fpmon's own parsers, already in its words
        return f"{name}: {exc.message}"
    found = errors()
    value = found[0].get("input") if found else None
    if isinstance(value, list | tuple) and len(value) == 1:
        value = value[0]
    text = "" if value is None else str(value)
    return f"{name} {text!r}: {_expected(param, text)}"


def _expected(param: Any, value: str) -> str:
    """What the parameter takes, as its help would say it."""
    described = param.type_descriptor
    if described.is_choice and described.choices:
        from fp_monitor.config.settings import did_you_mean

        choices = [c.value if isinstance(c, enum.Enum) else str(c) for c in described.choices]
        return f"expected one of {', '.join(choices)}{did_you_mean(value, choices)}"
    kind = described.annotation
    number = "a whole number" if kind is int else "a number"
    low, high = param.min, param.max
    if low is not None and high is not None:
        return f"expected {number} from {low} to {high}"
    if low is not None:
        return f"expected {number} of at least {low}"
    if high is not None:
        return f"expected {number} of at most {high}"
    if kind in (int, float):
        return f"expected {number}"
    return f"not a valid {getattr(kind, '__name__', 'value')}"
