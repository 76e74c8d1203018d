"""OPC UA value facts both of our asyncua adapters use: the field role's client and the
opcua role's server. Imports only `asyncua.ua`, never the server module."""

from __future__ import annotations

from asyncua import ua

# The values each integer variant type can hold; a value outside is refused, not truncated.
INT_RANGE: dict[ua.VariantType, tuple[int, int]] = {
    ua.VariantType.SByte: (-(2**7), 2**7 - 1),
    ua.VariantType.Byte: (0, 2**8 - 1),
    ua.VariantType.Int16: (-(2**15), 2**15 - 1),
    ua.VariantType.UInt16: (0, 2**16 - 1),
    ua.VariantType.Int32: (-(2**31), 2**31 - 1),
    ua.VariantType.UInt32: (0, 2**32 - 1),
    ua.VariantType.Int64: (-(2**63), 2**63 - 1),
    ua.VariantType.UInt64: (0, 2**64 - 1),
}
