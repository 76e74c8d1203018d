"""Where a unit keeps its state: the data directory (flash) and the run directory (tmpfs)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

DEFAULT_DATA_DIR = Path("/var/lib/appliance")
DEFAULT_RUN_DIR = Path("/run/appliance")


@dataclass(frozen=True)
class Paths:
    data_dir: Path
    run_dir: Path

    @classmethod
    def resolve(cls, data_dir: str | Path | None, run_dir: str | Path | None) -> Paths:
        data = Path(data_dir or os.environ.get("APPLIANCE_DATA_DIR") or DEFAULT_DATA_DIR)
        run = Path(run_dir or os.environ.get("APPLIANCE_RUN_DIR") or DEFAULT_RUN_DIR)
        return cls(data.absolute(), run.absolute())

    @property
    def secrets_dir(self) -> Path:
        """Generated secrets (TLS key, setup code, unit token): 0700, wiped by factory reset."""
        return self.data_dir / "secrets"

    @property
    def web_cert(self) -> Path:
        """The HTTPS certificate of the UI and API (made by `web.tls`, judged by health)."""
        return self.secrets_dir / "web-cert.pem"

    @property
    def web_key(self) -> Path:
        return self.secrets_dir / "web-key.pem"
