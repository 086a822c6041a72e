"""A flow's parameters, read from its source file without importing it (no Prefect import).

The command line offers every flow parameter as an option, with the flow's own docstring as
help, so the command, the Prefect UI form and the README say the same thing. Importing the flow
to ask Prefect for its parameter schema costs 3-4 s (Prefect itself); reading the function's
signature and docstring from the source takes milliseconds, so a mistyped option is refused at
once. tests/test_command_line.py checks that this reading equals Prefect's own schema.
"""

from __future__ import annotations

import argparse
import ast
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

FLOWS_DIR = Path(__file__).resolve().parent


@dataclass(frozen=True)
class FlowParameter:
    """One parameter as the UI form shows it: name, type, default, choices, description."""

    name: str
    kind: str  # "string", "integer", "boolean" or "array" (of strings)
    default: Any
    required: bool
    nullable: bool
    description: str
    choices: tuple[str, ...] | None = None

    @property
    def option(self) -> str:
        return "--" + self.name.replace("_", "-")


def flow_parameters(module_file: str, function: str) -> list[FlowParameter]:
    """The parameters of `function` in `flows/<module_file>`, in signature order."""
    tree = ast.parse((FLOWS_DIR / module_file).read_text(), module_file)
    for node in tree.body:
        if isinstance(node, ast.FunctionDef) and node.name == function:
            return _parameters(node)
    raise LookupError(f"no function {function!r} in flows/{module_file}")


def _parameters(node: ast.FunctionDef) -> list[FlowParameter]:
    descriptions = _docstring_args(ast.get_docstring(node) or "")
    arguments = node.args.args
    defaults: list[ast.expr | None] = [None] * (len(arguments) - len(node.args.defaults))
    defaults += node.args.defaults
    parameters = []
    for argument, default in zip(arguments, defaults, strict=True):
        annotation = ast.unparse(argument.annotation) if argument.annotation else "str"
        kind, nullable, choices = _kind(annotation)
        parameters.append(
            FlowParameter(
                name=argument.arg,
                kind=kind,
                default=None if default is None else ast.literal_eval(default),
                required=default is None,
                nullable=nullable,
                description=descriptions.get(argument.arg, ""),
                choices=choices,
            )
        )
    return parameters


def _kind(annotation: str) -> tuple[str, bool, tuple[str, ...] | None]:
    """(kind, nullable, choices) of an annotation such as `int | None` or `Literal["a", "b"]`."""
    parts = [part.strip() for part in annotation.split("|")]
    nullable = "None" in parts
    (main,) = [part for part in parts if part != "None"] or ["str"]
    if main.startswith("Literal["):
        literal = ast.literal_eval(f"({main.removeprefix('Literal[').removesuffix(']')},)")
        return "string", nullable, tuple(str(value) for value in literal)
    kinds = {"int": "integer", "bool": "boolean", "str": "string", "list[str]": "array"}
    if main not in kinds:
        raise TypeError(f"flow parameters of type {main!r} have no command-line form yet")
    return kinds[main], nullable, None


def _docstring_args(docstring: str) -> dict[str, str]:
    """The `Args:` section of a Google-style docstring: name -> one-line description."""
    found: dict[str, str] = {}
    inside, current = False, None
    for line in docstring.splitlines():
        if line.strip() == "Args:":
            inside = True
            continue
        if not inside:
            continue
        if line and not line.startswith(" "):
            break  # the next section
        stripped = line.strip()
        indent = len(line) - len(line.lstrip())
        if indent == 4 and ":" in stripped:
            current, _, text = stripped.partition(":")
            found[current] = text.strip()
        elif current and stripped:
            found[current] += " " + stripped
    return found


def add_flow_options(parser: argparse.ArgumentParser, parameters: list[FlowParameter]) -> None:
    """One option per parameter: `--shard-size N`, `--overwrite/--no-overwrite`, lists as
    `--classes bike cup`, `none` for an empty nullable value."""
    for parameter in parameters:
        help_text = parameter.description
        if parameter.kind == "boolean":
            parser.add_argument(
                parameter.option, dest=parameter.name, action=argparse.BooleanOptionalAction,
                default=parameter.default, help=f"{help_text} (default: {parameter.default})",
            )  # fmt: skip
            continue
        empty = " Pass 'none' for empty." if parameter.nullable and parameter.default else ""
        parser.add_argument(
            parameter.option,
            dest=parameter.name,
            required=parameter.required,
            default=parameter.default,
            nargs="+" if parameter.kind == "array" else None,
            choices=parameter.choices,
            type=_converter(parameter),
            metavar=parameter.name.upper(),
            help=f"{help_text} (required)"
            if parameter.required
            else f"{help_text}{empty} (default: {parameter.default})",
        )


def _converter(parameter: FlowParameter) -> Callable[[str], Any]:
    def convert(text: str) -> Any:
        if parameter.nullable and text.lower() in ("none", "null", ""):
            return None
        if parameter.kind == "integer":
            try:
                return int(text)
            except ValueError:
                raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        return text

    return convert
