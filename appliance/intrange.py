"""The range of each fixed-width integer type, by name, for both OPC UA sides (and any other).

A value outside its type's range is refused, never wrapped or truncated, where it is about
to become that type: a write to an OPC UA device (`field.opcua_client`) and a value the
northbound server publishes (`opcua.server`). The names are the configuration's point
types and, lower-cased, OPC UA's variant types (`VariantType.UInt32.name.lower()` is
"uint32"; "sbyte" and "byte" exist only there). It imports nothing (asyncua least of all),
so neither OPC UA side owns it and the pure core may use it too.
"""

from __future__ import annotations

INT_RANGE: dict[str, tuple[int, int]] = {
    "sbyte": (-(2**7), 2**7 - 1),
    "byte": (0, 2**8 - 1),
    "int16": (-(2**15), 2**15 - 1),
    "uint16": (0, 2**16 - 1),
    "int32": (-(2**31), 2**31 - 1),
    "uint32": (0, 2**32 - 1),
    "int64": (-(2**63), 2**63 - 1),
    "uint64": (0, 2**64 - 1),
}
