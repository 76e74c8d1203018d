"""Integration fixtures: one lab per session (prefix "t"), a fresh appliance per test."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from labkit import PREFIX, Appliance

from appliance.lab import topology
from appliance.lab.topology import LabSpec


@pytest.fixture(scope="session")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LabSpec]:
    if os.geteuid() != 0:
        pytest.skip("integration tests need root: they create network namespaces and nftables")
    spec = LabSpec(prefix=PREFIX, plcs=2, mgmt=False, root=tmp_path_factory.mktemp("lab"))
    topology.up(spec)
    try:
        yield spec
    finally:
        topology.down(spec)


@pytest.fixture
def appliance(lab: LabSpec, tmp_path: Path) -> Iterator[Appliance]:
    app = Appliance(lab, tmp_path)
    app.start()
    try:
        yield app
    finally:
        app.stop()
        # the next test starts from a kernel without our table, as a fresh unit would
        topology.ns_run(lab.ns_app, ["nft", "delete", "table", "inet", "appliance"], check=False)
        app.store.close()
