"""A conduit's Modbus restriction: which function codes, unit ids and addresses may cross.

`modbus:` on a conduit is `read-only`, `read-write`, or a mapping::

    modbus:
      function_codes: [3, 16]      # or `preset: read-only` / `preset: read-write`
      unit_ids: [1, 2]             # default: any unit id
      ranges:                      # default (no `ranges`): any address
        holding: [[0, 99], [200, 200]]
        coil: [[0, 15]]            # a table not listed here: no address of it
      on_refusal: exception        # or reset
      mode: enforce                # or test, or learn (see below)
      identify: false              # true: ask each device once for its identification

Addresses are 0-based, as on the wire (the PDU's starting address): holding register
"40001" in a 1-based tool's notation is `holding` address 0 here. A range is inclusive
and a request passes only if every address it touches is inside one range (a read of
10 registers from 95 touches 95..104).

`read-only` is function codes 1, 2, 3, 4 and 43 (only its MEI type 14, read device
identification); `read-write` adds 5, 6, 15, 16, 22 and 23. In a list, 43 also means
43/14 only. A refused request is answered with a Modbus exception (`exception`, the
default: the client sees a clear "illegal function" or "illegal data address" and its
connection, with the reads it still needs, stays up; a reset makes most clients
reconnect and retry, which floods the PLC with new connections) or the connection is
reset (`reset`).

`mode` says what the restriction does (`appliance.modbusproxy` carries it out):

- `enforce` (the default): a refused request never reaches the PLC;
- `test`: every request is checked as in `enforce` and counted, what would have been
  refused is counted and reported (`modbus.would_refuse` events), but everything passes;
- `learn`: everything passes and the proxy records what crosses (function codes, unit
  ids, address ranges per table, per client); `appliance conduits learned NAME` prints it
  as the `modbus:` mapping to paste. A learning conduit has no restriction to give:
  `modbus: learn` (or `{mode: learn}`; `on_refusal` may stay for the mode that follows).

`identify: true` makes the proxy ask each unit id seen through the conduit, once, for
its device identification (function 43, MEI type 14, the basic objects: vendor, product
code, revision) on the client's own connection, with a transaction id the client has
none outstanding for; the answer goes to the asset inventory (`appliance inventory`),
not to the client. Without it, the inventory has what a client asked for itself.

Learn, then test the learned mapping for a while, then enforce it: the same order as
the commercial enforcers', so that tightening a conduit never cuts a read production
needs without warning. In every mode the stream itself must be Modbus TCP (framing,
responses only to requests): a stream that is not is reset.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BeforeValidator,
    Field,
    GetJsonSchemaHandler,
    model_serializer,
    model_validator,
)

from appliance.config.base import Bool, Int, Strict

# The public function codes of the Modbus application protocol (V1.1b3, section 6).
FUNCTION_CODES: dict[int, str] = {
    1: "read coils",
    2: "read discrete inputs",
    3: "read holding registers",
    4: "read input registers",
    5: "write single coil",
    6: "write single register",
    7: "read exception status",
    8: "diagnostics",
    11: "get comm event counter",
    12: "get comm event log",
    15: "write multiple coils",
    16: "write multiple registers",
    17: "report server id",
    20: "read file record",
    21: "write file record",
    22: "mask write register",
    23: "read/write multiple registers",
    24: "read FIFO queue",
    43: "read device identification",  # encapsulated interface transport, MEI type 14 only
}
READ_ONLY: tuple[int, ...] = (1, 2, 3, 4, 43)
READ_WRITE: tuple[int, ...] = (*READ_ONLY, 5, 6, 15, 16, 22, 23)
PRESETS: dict[str, tuple[int, ...]] = {"read-only": READ_ONLY, "read-write": READ_WRITE}
# The address tables, named as a tag's `table` is.
TABLES: tuple[str, ...] = ("coil", "discrete", "input", "holding")
# Which table each function code with addresses reads or writes (23 touches holding twice).
TABLE_OF: dict[int, str] = {
    1: "coil",
    5: "coil",
    15: "coil",
    2: "discrete",
    4: "input",
    3: "holding",
    6: "holding",
    16: "holding",
    22: "holding",
    23: "holding",
    24: "holding",
}


def _function_code(v: int) -> int:
    if v not in FUNCTION_CODES:
        known = ", ".join(str(c) for c in FUNCTION_CODES)
        raise ValueError(f"{v} is not a public Modbus function code ({known})")
    return v


def _pair(v: Any) -> Any:
    if not isinstance(v, list) or len(v) != 2:
        raise ValueError(f"a range is [low, high] (two addresses 0-65535), not {v!r}")
    return v


def _range(v: list[int]) -> list[int]:
    if v[0] > v[1]:
        raise ValueError(f"range {v[0]}-{v[1]} is reversed: write [low, high]")
    return v


FunctionCode = Annotated[Int, AfterValidator(_function_code)]
UnitId = Annotated[Int, Field(ge=0, le=255)]
Address = Annotated[Int, Field(ge=0, le=65535)]
# [low, high], inclusive, 0-based wire addresses.
AddressRange = Annotated[list[Address], BeforeValidator(_pair), AfterValidator(_range)]


class ModbusRanges(Strict):
    """The addresses that may be touched, per table; a table not named: none of it."""

    coil: list[AddressRange] | None = None
    discrete: list[AddressRange] | None = None
    input: list[AddressRange] | None = None
    holding: list[AddressRange] | None = None

    def of(self, table: str) -> list[list[int]]:
        return getattr(self, table) or []


class ModbusRestriction(Strict):
    """What a conduit's Modbus traffic may do (see the module docstring)."""

    preset: Literal["read-only", "read-write"] | None = Field(
        None, description="read-only (1, 2, 3, 4, 43/14) or read-write (adds 5, 6, 15, 16, 22, 23)"
    )
    function_codes: list[FunctionCode] | None = Field(
        None, min_length=1, description="the function codes allowed (instead of a preset)"
    )
    unit_ids: list[UnitId] | None = Field(
        None, min_length=1, description="the unit ids allowed; default any"
    )
    ranges: ModbusRanges | None = Field(
        None,
        description="0-based wire addresses per table, [[low, high], ...] inclusive; default "
        "any address; a table not listed allows none",
    )
    on_refusal: Literal["exception", "reset"] = Field(
        "exception",
        description="answer a refused request with a Modbus exception (01 illegal function, "
        "02 illegal data address) and keep the connection, or reset the connection",
    )
    mode: Literal["enforce", "test", "learn"] = Field(
        "enforce",
        description="enforce (refused requests never reach the PLC), test (would-be "
        "refusals are counted and reported, everything passes) or learn (everything "
        "passes, what crosses is recorded for `appliance conduits learned`)",
    )
    identify: Bool = Field(
        False,
        description="ask each device seen through the conduit once for its device "
        "identification (43/14) for the asset inventory",
    )

    @classmethod
    def __get_pydantic_json_schema__(cls, core: Any, handler: GetJsonSchemaHandler) -> Any:
        """The schema says what the validator takes: a preset's name, or the mapping."""
        return {"anyOf": [{"type": "string", "enum": [*PRESETS, "learn"]}, handler(core)]}

    @model_validator(mode="before")
    @classmethod
    def _preset_text(cls, v: Any) -> Any:
        if isinstance(v, str):
            text = v.strip().lower()
            if text == "learn":
                return {"mode": "learn"}
            if text not in PRESETS:
                raise ValueError(
                    f"{v!r} is not a Modbus restriction: use read-only, read-write or a "
                    "mapping with function_codes (and unit_ids, ranges, on_refusal)"
                )
            return {"preset": text}
        if not isinstance(v, dict):
            raise ValueError(
                "must be read-only, read-write or a mapping with function_codes "
                "(and unit_ids, ranges, on_refusal)"
            )
        return v

    @model_validator(mode="after")
    def _one_source(self) -> ModbusRestriction:
        if self.mode == "learn":
            given = [
                k for k in ("preset", "function_codes", "unit_ids", "ranges")
                if getattr(self, k) is not None
            ]  # fmt: skip
            if given:
                raise ValueError(
                    f"mode learn passes everything: leave out {', '.join(given)} (learn "
                    "first, then paste what `appliance conduits learned` prints, in mode test)"
                )
            return self
        if self.preset is None and self.function_codes is None:
            raise ValueError("give `function_codes` (a list) or `preset` (read-only or read-write)")
        if self.preset is not None and self.function_codes is not None:
            raise ValueError("give `function_codes` or `preset`, not both")
        return self

    @model_serializer(mode="wrap")
    def _as_text(self, handler: Any) -> Any:
        """A bare preset is written back as the text it was given as (`read-only`), a bare
        learning restriction as `learn`; `mode: enforce` and `identify: false` (the
        defaults) are left out, so documents from before them keep their canonical form
        and hash."""
        out = handler(self)
        plain = self.on_refusal == "exception" and not self.identify
        if plain and self.unit_ids is None and self.ranges is None:
            if self.mode == "learn":
                return "learn"
            if self.preset is not None and self.mode == "enforce":
                return self.preset
        if isinstance(out, dict):
            if out.get("mode") == "enforce":
                del out["mode"]
            if out.get("identify") is False:
                del out["identify"]
        return out

    def allowed_function_codes(self) -> frozenset[int]:
        """The function codes that pass (in mode learn: every public one)."""
        if self.mode == "learn":
            return frozenset(FUNCTION_CODES)
        if self.function_codes is not None:
            return frozenset(self.function_codes)
        return frozenset(PRESETS[self.preset or "read-only"])

    def describe(self) -> str:
        """One line for the UI and events: `read-only` or `function codes 3, 16; units 1`,
        with `(test)` after it in mode test; `learning` in mode learn."""
        if self.mode == "learn":
            return "learning"
        text = self._restriction()
        return text if self.mode == "enforce" else f"{text} ({self.mode})"

    def _restriction(self) -> str:
        if self.preset is not None and self.unit_ids is None and self.ranges is None:
            return self.preset
        parts = [
            self.preset
            or "function codes " + ", ".join(str(c) for c in sorted(self.allowed_function_codes()))
        ]
        if self.unit_ids is not None:
            parts.append("units " + ", ".join(str(u) for u in self.unit_ids))
        if self.ranges is not None:
            for table in TABLES:
                spans = self.ranges.of(table)
                if spans:
                    parts.append(f"{table} " + ", ".join(f"{lo}-{hi}" for lo, hi in spans))
        return "; ".join(parts)
