"""Mutated configurations: the examples with keys deleted, types changed, values swapped
between fields, numbers out of range, empty, very long and unusual text, list items
repeated, and lines of the YAML text cut, moved or mangled. Whatever comes out, reading it
either gives a configuration or refuses it with one-line errors naming a field, quickly:
never another exception (the CLI's exit 1 and traceback).

The mutations come from a seed that hypothesis draws: the same seeds every `make test`
(derandomized, tests/propkit.py), random ones and 20 times as many under `make fuzz`
(APPLIANCE_FUZZ=1). A failure prints the seed; `mutated(EXAMPLE, seed)` rebuilds the text.
The CLI test runs a few of them through the real `appliance config validate` and `import`.
"""

from __future__ import annotations

import copy
import os
import random
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st
from propkit import FUZZ, examples

from appliance.config.load import load_text
from appliance.errors import ConfigInvalid

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = sorted((ROOT / "examples").glob("*.yaml"))
IN_PROCESS_S = 1.0  # reading one mutated document, parsing and checking included
CLI_S = 5.0  # one CLI run: a fresh interpreter importing the package, then the above

# values put where another value was: other types, edges of ranges, awkward text
ODD: list[Any] = [
    None, True, False, 0, -1, 1, 2**31, 2**63, 2**64, 10**30, -(10**30), 10**400,
    1.5, -0.0, 1e308, -1e308, float("nan"), float("inf"), float("-inf"),
    "", " ", "x" * 5000, "\u202e", "\x00", "\x1b[31m", "ä", "\U0001f4a5", "0", "1", "true",
    "null", "1e309", "NaN", "::", "0.0.0.0/0", "::/0", "255.255.255.255", "999.1.1.1",
    "a" * 300, [], {}, [[]], [{}], {"a": 1}, ["x"], [None], "${X}", "%s%n",
    "../../etc/passwd", "\n", "a\nb", "-", "*", "65536", 65535, 65536, 0.1,
    "ff:ff:ff:ff:ff:ff", "2027-01-31T18:00:00Z", "1970-01-01T00:00:00Z",
]  # fmt: skip
# text put into a line of the YAML
SNIPPETS = [
    "\t", " ", "#", ":", "- ", "&a ", "*a", "!!binary ", "!!python/object:os.system ", "{",
    "[", '"', "'", "|", ">", "? ", "%", "@", "`", "\x85", "\u2028", "\ufeff", "\\",
    "<<: {}", "9" * 500, ".nan", "1e999", "~", "\r", "---",
]  # fmt: skip


def _paths(value: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [path]
    if isinstance(value, dict):
        for k, v in value.items():
            out += _paths(v, (*path, k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            out += _paths(v, (*path, i))
    return out


def _at(doc: Any, path: tuple[Any, ...]) -> Any:
    for part in path:
        doc = doc[part]
    return doc


def _mutate_data(doc: dict[str, Any], rng: random.Random) -> dict[str, Any]:
    doc = copy.deepcopy(doc)
    for _ in range(rng.choice((1, 1, 2, 3))):
        paths = _paths(doc)[1:]
        if not paths:
            break
        path = rng.choice(paths)
        parent, key = _at(doc, path[:-1]), path[-1]
        value = parent[key]
        op = rng.randrange(9)
        if op == 0:
            del parent[key]
        elif op == 1:
            parent[key] = copy.deepcopy(rng.choice(ODD))
        elif op == 2:  # another field's value here
            parent[key] = copy.deepcopy(_at(doc, rng.choice(paths)))
        elif op == 3 and isinstance(value, int | float) and not isinstance(value, bool):
            parent[key] = rng.choice(
                (value * 10 ** rng.randrange(1, 30), -value, value + 1, value - 1, value * 1e300)
            )
        elif op == 4 and isinstance(value, str):
            parent[key] = rng.choice(
                (value * rng.randrange(2, 200), value.upper(), value + "\u0301", value[:-1], "")
            )
        elif op == 5 and isinstance(value, list) and value:
            value.append(copy.deepcopy(rng.choice(value)))  # a duplicate item
        elif op == 6 and isinstance(value, list):
            parent[key] = value * rng.randrange(2, 50)
        elif op == 7 and isinstance(parent, dict):  # a misspelt twin of the key
            parent[f"{key}{rng.choice(('_', 's', 'x', ''))}{rng.choice(('', 'y'))}"] = value
        elif op == 8:  # swap two values
            other = rng.choice(paths)
            try:
                other_parent = _at(doc, other[:-1])
                parent[key], other_parent[other[-1]] = other_parent[other[-1]], value
            except (KeyError, IndexError, TypeError):
                pass  # one of them was inside the other, or moved
    return doc


def _mutate_text(text: str, rng: random.Random) -> str:
    lines = text.split("\n")
    for _ in range(rng.choice((1, 2, 3))):
        i = rng.randrange(len(lines))
        op = rng.randrange(6)
        if op == 0:
            del lines[i]
        elif op == 1:
            lines.insert(i, lines[rng.randrange(len(lines))])
        elif op == 2:
            at = rng.randrange(len(lines[i]) + 1)
            lines[i] = lines[i][:at] + rng.choice(SNIPPETS) + lines[i][at:]
        elif op == 3:
            lines[i] = " " + lines[i]
        elif op == 4:
            lines[i] = lines[i].lstrip()
        else:
            j = rng.randrange(len(lines))
            lines[i], lines[j] = lines[j], lines[i]
        if not lines:
            break
    return "\n".join(lines)


def mutated(example: Path, seed: int) -> str:
    """The mutated text of `example` for `seed` (the same text for the same seed)."""
    rng = random.Random(seed)
    text = example.read_text()
    if rng.random() < 0.5:
        return _mutate_text(text, rng)
    doc = _mutate_data(yaml.safe_load(text), rng)
    return yaml.safe_dump(doc, sort_keys=False, allow_unicode=rng.random() < 0.5)


def _check_read(text: str) -> None:
    t0 = time.perf_counter()
    try:
        load_text(text, "mutated.yaml")
    except ConfigInvalid as e:
        assert e.errors, "a refusal says why"
        for line in e.lines():
            assert "\n" not in line and "\r" not in line, line
    took = time.perf_counter() - t0
    assert took < IN_PROCESS_S, f"{took:.2f} s"


def test_the_examples_are_there() -> None:
    assert EXAMPLES, "examples/*.yaml"
    for example in EXAMPLES:
        load_text(example.read_text(), str(example))


def test_the_mutations_change_the_examples() -> None:
    # a mutator that returned its input would make the property below vacuous
    for example in EXAMPLES:
        texts = {mutated(example, seed) for seed in range(50)}
        texts.discard(example.read_text())
        assert len(texts) > 40


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda p: p.name)
@settings(max_examples=examples(150))
@given(seed=st.integers(0, 2**32 - 1))
def test_a_mutated_configuration_is_read_or_refused_in_one_line_each(
    example: Path, seed: int
) -> None:
    _check_read(mutated(example, seed))


# -- through the real CLI --------------------------------------------------------------------

CLI_SEEDS = range(12 if not FUZZ else 200)


def _cli(args: list[str], env: dict[str, str]) -> tuple[subprocess.CompletedProcess[str], float]:
    t0 = time.perf_counter()
    out = subprocess.run(
        [sys.executable, "-m", "appliance", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        cwd=ROOT,
    )
    return out, time.perf_counter() - t0


def _revisions(env: dict[str, str]) -> int:
    out, _ = _cli(["config", "log"], env)
    assert out.returncode == 0, out.stderr
    return sum(
        1 for line in out.stdout.splitlines() if line.split()[:1] and line.split()[0].isdigit()
    )


def test_the_cli_gives_exit_0_or_2_and_one_line_per_error(tmp_path: Path) -> None:
    env = {
        **os.environ,
        "APPLIANCE_DATA_DIR": str(tmp_path / "data"),
        "APPLIANCE_RUN_DIR": str(tmp_path / "run"),
    }
    env.pop("APPLIANCE_DEBUG", None)
    seen = set()
    stored = 0
    for example in EXAMPLES:
        for seed in CLI_SEEDS:
            path = tmp_path / f"{example.stem}-{seed}.yaml"
            path.write_text(mutated(example, seed))
            command = "import" if seed % 3 == 0 else "validate"
            out, took = _cli(["config", command, str(path)], env)
            what = f"{command} {example.name} seed {seed}: {out.stderr[-2000:]}"
            assert out.returncode in (0, 2), what
            assert "Traceback" not in out.stderr + out.stdout, what
            assert took < CLI_S, f"{what} took {took:.2f} s"
            seen.add(out.returncode)
            if out.returncode == 2:
                lines = out.stderr.strip().splitlines()
                assert lines and all(ln.startswith("appliance: ") for ln in lines), what
            elif command == "import":
                stored += 1
    assert 2 in seen, "no mutation was refused: the mutator is broken"
    assert _revisions(env) == stored, "a refused import stored a revision"
