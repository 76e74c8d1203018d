"""The modbusproxy role's tables (history DB): what learning conduits saw, the Modbus assets.

`MODELS` is handed to `Store` by the processes that use them (the modbusproxy role, the
`appliance conduits learned` and `appliance inventory` commands). The role keeps both in
memory and writes what changed every few seconds (`StoreRecords`); it is the only writer,
so a row is replaced whole.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

import peewee as pw

from appliance.modbusproxy.assets import Asset
from appliance.modbusproxy.learn import Key, Observed
from appliance.state.db import HistoryModel, Store


class LearnedRow(HistoryModel):
    """One `learn.Observed`."""

    conduit = pw.CharField(max_length=64)
    client = pw.CharField(max_length=45)
    plc = pw.CharField(max_length=45)
    unit = pw.IntegerField()
    function = pw.IntegerField()
    count = pw.IntegerField(default=0)
    unusable = pw.IntegerField(default=0)
    first_seen = pw.FloatField()
    last_seen = pw.FloatField()
    spans = pw.TextField(default="{}")  # table -> [[low, high], ...]

    class Meta:
        table_name = "modbus_learned"
        indexes = ((("conduit", "client", "plc", "unit", "function"), True),)

    def observed(self) -> Observed:
        return Observed(
            self.conduit, self.client, self.plc, self.unit, self.function,
            self.first_seen, self.last_seen, self.count, self.unusable, json.loads(self.spans),
        )  # fmt: skip


class AssetRow(HistoryModel):
    """One `assets.Asset`: a Modbus device seen through the proxy."""

    address = pw.CharField(max_length=45, unique=True)
    first_seen = pw.FloatField()
    last_seen = pw.FloatField()
    doc = pw.TextField(default="{}")  # units, functions, conduits, clients, identity

    class Meta:
        table_name = "modbus_asset"

    def asset(self) -> Asset:
        return Asset.from_dict(
            {**json.loads(self.doc), "address": self.address,
             "first_seen": self.first_seen, "last_seen": self.last_seen}
        )  # fmt: skip


MODELS: tuple[type[pw.Model], ...] = (LearnedRow, AssetRow)


def _row(a: Asset) -> dict[str, Any]:
    d = a.as_dict()
    address, first, last = d.pop("address"), d.pop("first_seen"), d.pop("last_seen")
    return {"address": address, "first_seen": first, "last_seen": last, "doc": json.dumps(d)}


class StoreRecords:
    """The role's records in the history DB (the fake in the unit tests keeps them in a
    dict). Called from a worker thread."""

    def __init__(self, store: Store) -> None:
        self.store = store
        store.ensure(MODELS)

    def load_learned(self) -> list[Observed]:
        return [r.observed() for r in LearnedRow.select()]

    def save_learned(self, changed: Iterable[Observed], gone: Iterable[Key]) -> None:
        with self.store.history.atomic():
            for conduit, client, plc, unit, function in gone:
                LearnedRow.delete().where(
                    (LearnedRow.conduit == conduit) & (LearnedRow.client == client)
                    & (LearnedRow.plc == plc) & (LearnedRow.unit == unit)
                    & (LearnedRow.function == function)
                ).execute()  # fmt: skip
            for o in changed:
                d = o.as_dict()
                d["spans"] = json.dumps(d["spans"], sort_keys=True)
                LearnedRow.insert(**d).on_conflict_replace().execute()

    def load_assets(self) -> list[Asset]:
        return [r.asset() for r in AssetRow.select()]

    def save_assets(self, changed: Iterable[Asset]) -> None:
        with self.store.history.atomic():
            for a in changed:
                AssetRow.insert(**_row(a)).on_conflict_replace().execute()


def learned(conduit: str | None = None) -> list[Observed]:
    """The observations saved (of one conduit); the Store must be open with MODELS."""
    q = LearnedRow.select()
    if conduit is not None:
        q = q.where(LearnedRow.conduit == conduit)
    return [r.observed() for r in q]


def assets() -> list[Asset]:
    """The assets saved, by address; the Store must be open with MODELS."""
    return sorted((r.asset() for r in AssetRow.select()), key=lambda a: _sort_key(a.address))


def _sort_key(address: str) -> tuple[int, ...]:
    try:
        return tuple(int(p) for p in address.split("."))
    except ValueError:
        return (1 << 16,)
