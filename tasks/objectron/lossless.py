"""Lossless JSON of Objectron's protobuf messages: every field of the official schema, under its
official name, at its place in the message.

The JSON twins (tasks/objectron/decode.py) carry these beside their flattened views: the
geometry twin's `records` (one `ARFrame` per record of geometry.pbdata) and the annotation
twin's `sequence` (the file's `Sequence`), so nothing in a `.pbdata` file is out of a reader's
reach. The rules, the same for every message:

- every field the schema declares is present, in field-number order;
- a repeated field is a list (empty when the message has none);
- a message field is an object, or null when the message does not hold it;
- a proto2 scalar (geometry.pbdata's messages) is null when absent (the schema's default then
  applies: e.g. `ARCamera.tracking_state` UNAVAILABLE); a proto3 scalar (the annotation's
  messages) has no presence, so an absent one is its default (0, "", false), as protobuf reads it;
- float and double values are the stored numbers (a float32 widened exactly to a double), enum
  values their names (the number when the schema has no name for it), bytes base64 (RFC 4648,
  with padding), int64 values integers (beyond 2**53 a JavaScript reader loses precision).

Each message type is compiled once into a converter (one dict display, an attribute read per
field), so a message costs no lookup of its descriptor. Packed repeated scalars are read by
protobuf's C code in one call (`list(container)`).
"""

from __future__ import annotations

import base64
from collections.abc import Callable
from typing import Any

from google.protobuf import descriptor

_FD = descriptor.FieldDescriptor
Converter = Callable[[Any], dict[str, Any]]
_converters: dict[str, Converter] = {}


def message_document(message: Any) -> dict[str, Any]:
    """The lossless JSON-ready dict of a parsed message (module docstring)."""
    return converter(message.DESCRIPTOR)(message)


def converter(message_type: descriptor.Descriptor) -> Converter:
    """The converter of one message type (built on first use, then cached)."""
    found = _converters.get(message_type.full_name)
    if found is None:
        found = _compile(message_type)
    return found


def _compile(message_type: descriptor.Descriptor) -> Converter:
    """A function that returns one dict literal with an expression per field.

    Written as source and compiled once per message type: one dict display with an attribute
    read per field costs about a third of calling a closure per field, and a video's twins hold
    tens of thousands of small messages (points, keypoints). Field names are protobuf
    identifiers, so they are valid Python names and string keys as they are.
    """
    namespace: dict[str, Any] = {"b64": _base64}
    entries = []
    for number, field in enumerate(message_type.fields):
        name = field.name
        value = f"m.{name}"
        if field.type == _FD.TYPE_MESSAGE:
            namespace[f"c{number}"] = None  # filled below: the type may contain itself
            if field.is_repeated:
                entries.append(f"{name!r}: [c{number}(x) for x in {value}]")
            else:
                entries.append(f"{name!r}: c{number}({value}) if m.HasField({name!r}) else None")
            continue
        if field.type == _FD.TYPE_ENUM:
            namespace[f"e{number}"] = {v.number: v.name for v in field.enum_type.values}
            one = f"e{number}.get({{}}, {{}})"
        elif field.type == _FD.TYPE_BYTES:
            one = "b64({})"
        else:
            one = "{}"
        if field.is_repeated:
            item = one.format("x", "x")
            expression = f"list({value})" if item == "x" else f"[{item} for x in {value}]"
        else:
            expression = one.format(value, value)
            if field.has_presence:
                expression = f"{expression} if m.HasField({name!r}) else None"
        entries.append(f"{name!r}: {expression}")
    source = "def convert(m):\n    return {" + ", ".join(entries) + "}\n"
    exec(compile(source, f"<lossless {message_type.full_name}>", "exec"), namespace)
    convert: Converter = namespace["convert"]
    # Registered before the fields' converters are built, so a recursive type finds itself.
    _converters[message_type.full_name] = convert
    for number, field in enumerate(message_type.fields):
        if field.type == _FD.TYPE_MESSAGE:
            namespace[f"c{number}"] = converter(field.message_type)
    return convert


def _base64(value: bytes) -> str:
    return base64.b64encode(value).decode("ascii")


def leaf_paths(message_type: descriptor.Descriptor, prefix: str = "") -> list[str]:
    """Every leaf field reachable from `message_type`, as dotted paths (`camera.euler_angles.
    roll`; a repeated message contributes its element's fields under its own name). The README's
    field table and the tests are built from this list."""
    paths: list[str] = []
    for field in message_type.fields:
        path = f"{prefix}{field.name}"
        if field.type == _FD.TYPE_MESSAGE:
            paths += leaf_paths(field.message_type, f"{path}.")
        else:
            paths.append(path)
    return paths
