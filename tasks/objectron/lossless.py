"""Lossless JSON of Objectron's protobuf messages: every field of the official schema, under its
official name, at its place in the message.

The JSON twins (tasks/objectron/decode.py) carry these beside their flattened views: the
geometry twin's `records` (one `ARFrame` per record of geometry.pbdata) and the annotation
twin's `sequence` (the file's `Sequence`), so nothing in a `.pbdata` file is out of a reader's
reach. The rules, the same for every message:

- every field the schema declares is present, in field-number order;
- a repeated field is a list (empty when the message has none);
- a message field is an object, or null when the message does not hold it; except a *vector*:
  a message type whose fields are all singular floats or doubles (a point's x, y, z; a texture
  coordinate's u, v; Euler angles; a quaternion) is a list of its values in field-number order
  (`[x, y, z]`), so a repeated one (a point cloud, a plane's vertices) is a list of such lists;
- a proto2 scalar (geometry.pbdata's messages) is null when absent (the schema's default then
  applies: e.g. `ARCamera.tracking_state` UNAVAILABLE), a vector's component too; a proto3
  scalar (the annotation's messages) has no presence, so an absent one is its default (0, "",
  false), as protobuf reads it;
- float and double values are the stored numbers (a float32 widened exactly to a double), enum
  values their names (the number when the schema has no name for it), bytes base64 (RFC 4648,
  with padding), int64 values integers (beyond 2**53 a JavaScript reader loses precision).

The documents are for orjson with `OPT_SERIALIZE_NUMPY` (tasks/objectron/decode_pool.py): a
repeated vector field is read straight from the wire into a float64 array when its elements are
encoded the usual way (every component present, nothing else in them), which is the bulk of a
capture (hundreds of feature points per frame) and costs no Python object per point; any other
encoding takes the message-by-message path and gives the same JSON.

Each message type is compiled once into a converter (one dict display, an attribute read per
field), so a message costs no lookup of its descriptor. Packed repeated scalars are read by
protobuf's C code in one call (`list(container)`).
"""

from __future__ import annotations

import base64
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from google.protobuf import descriptor

_FD = descriptor.FieldDescriptor
Converter = Callable[[Any], Any]
_converters: dict[str, Converter] = {}
_FLOATS = {_FD.TYPE_FLOAT: (5, "<f4", 4), _FD.TYPE_DOUBLE: (1, "<f8", 8)}  # wire type, dtype, size


def message_document(message: Any) -> dict[str, Any]:
    """The lossless document of a parsed message (module docstring): dicts, lists, scalars and
    float64 arrays, ready for orjson with `OPT_SERIALIZE_NUMPY`."""
    document: dict[str, Any] = converter(message.DESCRIPTOR)(message)
    return document


def is_vector(message_type: descriptor.Descriptor) -> bool:
    """Whether the type is written as a list of its values (module docstring)."""
    fields = message_type.fields
    return bool(fields) and all(f.type in _FLOATS and not f.is_repeated for f in fields)


def converter(message_type: descriptor.Descriptor) -> Converter:
    """The converter of one message type (built on first use, then cached)."""
    found = _converters.get(message_type.full_name)
    if found is None:
        found = _compile(message_type)
    return found


def _compile(message_type: descriptor.Descriptor) -> Converter:
    """A function that returns one dict display (a list display for a vector) with an
    expression per field.

    Written as source and compiled once per message type: one display with an attribute read
    per field costs about a third of calling a closure per field, and a video's twins hold
    thousands of small messages (keypoints). Field names are protobuf identifiers, so they are
    valid Python names and string keys as they are.
    """
    namespace: dict[str, Any] = {"b64": _base64}
    vector = is_vector(message_type)
    entries = []
    wire_fields: list[int] = []  # the repeated vector fields, read from the wire when they can be
    for number, field in enumerate(message_type.fields):
        name = field.name
        value = f"m.{name}"
        if field.type == _FD.TYPE_MESSAGE:
            namespace[f"c{number}"] = None  # filled below: the type may contain itself
            each = f"list(map(c{number}, {value}))"
            if field.is_repeated and is_vector(field.message_type):
                namespace[f"r{len(wire_fields)}"] = _RepeatedVectors(field)
                entries.append(f"{name!r}: w[{len(wire_fields)}] if w else {each}")
                wire_fields.append(number)
            elif field.is_repeated:
                entries.append(f"{name!r}: {each}")
            else:
                one = (
                    _inline_vector(field.message_type, value, f"v{number}")
                    if is_vector(field.message_type)
                    else f"c{number}({value})"
                )
                entries.append(f"{name!r}: {one} if m.HasField({name!r}) else None")
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
        entries.append(expression if vector else f"{name!r}: {expression}")
    opening, closing = "[]" if vector else "{}"
    body = opening + ", ".join(entries) + closing
    source = "def convert(m):\n"
    if wire_fields:
        namespace["from_wire"] = _from_wire
        readers = ", ".join(f"r{i}" for i in range(len(wire_fields)))
        source += f"    w = from_wire(m, ({readers},))\n"
    source += f"    return {body}\n"
    exec(compile(source, f"<lossless {message_type.full_name}>", "exec"), namespace)
    convert: Converter = namespace["convert"]
    # Registered before the fields' converters are built, so a recursive type finds itself.
    _converters[message_type.full_name] = convert
    for number, field in enumerate(message_type.fields):
        if field.type == _FD.TYPE_MESSAGE:
            namespace[f"c{number}"] = converter(field.message_type)
    return convert


def _inline_vector(message_type: descriptor.Descriptor, value: str, name: str) -> str:
    """A list display of a vector held in a field (`[(v := m.point_3d).x, v.y, v.z]`): the
    same as calling its converter, without the call (one per keypoint in an annotation)."""
    items = []
    for index, component in enumerate(message_type.fields):
        holder = f"({name} := {value})" if index == 0 else name
        if component.has_presence:
            items.append(
                f"{name}.{component.name} if {holder}.HasField({component.name!r}) else None"
            )
        else:
            items.append(f"{holder}.{component.name}")
    return "[" + ", ".join(items) + "]"


class _RepeatedVectors:
    """Reads one repeated vector field's elements from the parent's wire bytes into an array.

    An element in the usual encoding is its tag, its length, and each component's one-byte tag
    and little-endian value, every component present: a fixed run of bytes, so `n` elements in
    a row are `n` equal strides whose tag and length bytes equal one template's, and the values
    are a strided `n x components` view of the bytes (checked and read in C, no object per
    element).
    """

    def __init__(self, field: descriptor.FieldDescriptor) -> None:
        components = field.message_type.fields
        kinds = {_FLOATS[c.type] for c in components}
        if len(kinds) != 1 or max(c.number for c in components) > 15:
            # No such type in the schema (mixed floats and doubles, two-byte tags).
            raise ValueError(f"{field.full_name}: not a vector the wire reader handles")
        ((wire_type, self.dtype, size),) = kinds
        body = b"".join(_varint(c.number << 3 | wire_type) + bytes(size) for c in components)
        self.tag = _varint(field.number << 3 | 2)
        template = self.tag + _varint(len(body)) + body
        self.stride = len(template)
        self.components = len(components)
        self.first_value = len(template) - len(body) + 1
        self.component_stride = size + 1  # a component's tag byte and value
        value_bytes = {self.first_value + i * (size + 1) + k for i in range(self.components)
                       for k in range(size)}  # fmt: skip
        # (offset in the stride, the byte every element has there)
        self.fixed = [(i, template[i : i + 1]) for i in range(self.stride) if i not in value_bytes]
        self.name = field.name

    def read(self, data: bytes, start: int, count: int) -> np.ndarray | None:
        """The `count` elements at `start` as a `count x components` float64 array, or None
        when they are not all in the usual encoding."""
        end = start + count * self.stride
        if end > len(data):
            return None
        for offset, byte in self.fixed:
            if data[start + offset : end : self.stride] != byte * count:
                return None
        values = np.ndarray(
            (count, self.components),
            dtype=self.dtype,
            buffer=data,
            offset=start + self.first_value,
            strides=(self.stride, self.component_stride),
        )
        return values.astype(np.float64)


def _from_wire(message: Any, readers: Sequence[_RepeatedVectors]) -> list[Any] | None:
    """Each repeated vector field of `message` read from its wire bytes, or None when any of
    them is not in the usual encoding (then the message path converts them all)."""
    counts = [len(getattr(message, reader.name)) for reader in readers]
    if not any(counts):
        return None
    data = message.SerializeToString()
    found: list[Any] = [None] * len(readers)
    for index, count in enumerate(counts):
        if not count:
            found[index] = []
    wanted = {reader.tag: index for index, reader in enumerate(readers) if counts[index]}
    position, end = 0, len(data)
    while position < end and wanted:
        key_start = position
        key, position = _read_varint(data, position)
        tag = data[key_start:position]
        if tag in wanted:
            index = wanted.pop(tag)
            block = readers[index].read(data, key_start, counts[index])
            if block is None:
                return None
            found[index] = block
            position = key_start + counts[index] * readers[index].stride
            continue
        wire_type = key & 7
        if wire_type == 0:
            _, position = _read_varint(data, position)
        elif wire_type == 1:
            position += 8
        elif wire_type == 5:
            position += 4
        elif wire_type == 2:
            length, position = _read_varint(data, position)
            position += length
        else:  # groups: not in this schema
            return None
    return None if wanted else found


def _varint(value: int) -> bytes:
    out = bytearray()
    while value > 0x7F:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _read_varint(data: bytes, position: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        byte = data[position]
        position += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, position
        shift += 7


def _base64(value: bytes) -> str:
    return base64.b64encode(value).decode("ascii")


def leaf_keys(message_type: descriptor.Descriptor, prefix: str = "") -> list[tuple[str, str]]:
    """Every leaf field as `(path, key)`: its dotted path (`leaf_paths`) and where the document
    holds it, which differs for a vector's component: its place in the vector's list
    (`camera.euler_angles.roll` is at `camera.euler_angles[0]`; `raw_feature_points.point.x`
    at `raw_feature_points.point[0]`, in each point of the list)."""
    keys: list[tuple[str, str]] = []
    for field in message_type.fields:
        path = f"{prefix}{field.name}"
        if field.type != _FD.TYPE_MESSAGE:
            keys.append((path, path))
        elif is_vector(field.message_type):
            for index, component in enumerate(field.message_type.fields):
                keys.append((f"{path}.{component.name}", f"{path}[{index}]"))
        else:
            keys += leaf_keys(field.message_type, f"{path}.")
    return keys


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
