"""Count a request's protobuf fields before parsing it, so that parsing is bounded by the limits, not the size.

gRPC parses each request on the gateway's event loop, holding the GIL (a thread would not help). Its cost
grows with the number of fields more than with the bytes: 6 MiB (``limits.max_message_bytes``) of empty
detections is 3 million of them and took 120-250 ms to parse, a stall of every other call and health
probe; the same 6 MiB of images takes 0.3 ms. :func:`count_fields` walks the wire format first, field by
field through the message types of the schema (length-delimited fields are skipped, not read), and stops
as soon as a repeated field has more entries than the limits allow or the request has more fields than
any request within the limits could have. So the walk costs at most ``field_budget`` steps (about 1 ms
with the default limits), and what is then parsed is that small.

    problem = count_fields(data, pb.DescribeRequest.DESCRIPTOR, {"detections": 100, "crops": 4}, budget)
    # None, or a message naming what is wrong ("the request has more than 100 detections; ...")
"""

from __future__ import annotations

from collections.abc import Mapping

from google.protobuf.descriptor import Descriptor, FieldDescriptor

__all__ = ["count_fields", "field_budget"]

_WHAT = {"detections": "limits.max_detections", "crops": "limits.max_crops"}


class _Refused(Exception):
    pass


def field_budget(descriptor: Descriptor, most: Mapping[str, int]) -> int:
    """Twice the most fields a request within ``most`` (entries per repeated field) has, each field once."""
    def size(d: Descriptor) -> int:
        return sum(size(f.message_type) + 1 if f.type == FieldDescriptor.TYPE_MESSAGE else 1 for f in d.fields)
    total = sum(1 for f in descriptor.fields if f.name not in most)
    total += sum(n * (size(descriptor.fields_by_name[name].message_type) + 1) for name, n in most.items())
    return 2 * total + 64


def count_fields(data: bytes, descriptor: Descriptor, most: Mapping[str, int], budget: int) -> str | None:
    """None when ``data`` has at most ``most[name]`` entries of each named top-level repeated field and at
    most ``budget`` fields in all; otherwise why not (a message for INVALID_ARGUMENT). Malformed data is
    left to the parser (it says so itself)."""
    counts = dict.fromkeys(most, 0)
    state = [budget]
    try:
        _walk(memoryview(data), descriptor, counts, most, state, top=True)
    except _Refused as exc:
        return str(exc)
    except IndexError:  # truncated: the parser refuses it with its own message
        return None
    return None


def _walk(data: memoryview, descriptor: Descriptor, counts: dict[str, int], most: Mapping[str, int],
          state: list[int], *, top: bool) -> None:
    i, n = 0, len(data)
    while i < n:
        state[0] -= 1
        if state[0] < 0:
            raise _Refused("the request has more protobuf fields than any request within the gateway's limits "
                           "(limits.max_detections, limits.max_crops); expected a request as the agent sends it")
        key, i = _varint(data, i)
        number, wire = key >> 3, key & 7
        field = descriptor.fields_by_number.get(number)
        if wire == 0:
            _, i = _varint(data, i)
        elif wire == 1:
            i += 8
        elif wire == 5:
            i += 4
        elif wire == 2:
            length, i = _varint(data, i)
            if field is not None and field.type == FieldDescriptor.TYPE_MESSAGE and i + length <= n:
                _walk(data[i:i + length], field.message_type, counts, most, state, top=False)
            i += length
        else:  # groups (not in proto3) or garbage: the parser would skip over what this walk cannot count
            raise _Refused(f"the request is not a valid {descriptor.name}: wire type {wire} at byte {i}; "
                           "expected protobuf as the agent sends it")
        if top and field is not None and field.name in counts:
            counts[field.name] += 1
            if counts[field.name] > most[field.name]:
                raise _Refused(f"the request has more than {most[field.name]} {field.name}; expected at most "
                               f"{most[field.name]} ({_WHAT.get(field.name, field.name)})")


def _varint(data: memoryview, i: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        byte = data[i]
        i += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80 or shift > 63:
            return value, i
        shift += 7
