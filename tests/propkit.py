"""How many examples a property test tries: the same ones in `make test`, many in `make fuzz`.

`make test` (and CI) must not go red on one run and green on the next, so hypothesis
derandomizes there: the same examples every run, chosen from the test's own source.
`make fuzz` sets APPLIANCE_FUZZ=1: random seeds and FUZZ_FACTOR times the examples, the
long search for what the repeatable run does not reach. A failure prints the blob that
replays it (`@reproduce_failure`).
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

FUZZ = os.environ.get("APPLIANCE_FUZZ") == "1"
FUZZ_FACTOR = int(os.environ.get("APPLIANCE_FUZZ_FACTOR", "20"))
DEFAULT_EXAMPLES = 200

settings.register_profile(
    "repeatable",
    max_examples=DEFAULT_EXAMPLES,
    derandomize=True,
    deadline=None,
    database=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile(
    "fuzz",
    max_examples=DEFAULT_EXAMPLES * FUZZ_FACTOR,
    derandomize=False,
    deadline=None,
    database=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.load_profile("fuzz" if FUZZ else "repeatable")


def examples(n: int) -> int:
    """`n` examples in `make test`, FUZZ_FACTOR times as many in `make fuzz`."""
    return n * FUZZ_FACTOR if FUZZ else n
