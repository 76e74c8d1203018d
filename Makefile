# The two commands of the README: `make demo` and `make test`.
VENV ?= .venv
BIN := $(VENV)/bin
export VENV

.PHONY: setup setup-test demo demo-down test fuzz unit browser lint bench deb image bundle clean

setup:
	@scripts/setup-host

setup-test:
	@scripts/setup-host --test

demo: setup
	$(BIN)/appliance demo

demo-down: setup
	$(BIN)/appliance lab down

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports --no-cache

test: setup-test lint
	scripts/run-tests

# The property tests (hypothesis, schemathesis) with random seeds and 20x the examples
# (APPLIANCE_FUZZ_FACTOR): the long search `make test` leaves out to stay repeatable.
fuzz: setup-test
	APPLIANCE_FUZZ=1 $(BIN)/python -m pytest -q -p no:cacheprovider \
		$$(grep -rl --include='test_*.py' -e '^from hypothesis' -e '^import schemathesis' tests)

unit: setup
	$(BIN)/python -m pytest -q tests/unit tests/fleet -m "not integration"

browser: setup-test
	$(BIN)/python -m pytest -q tests/browser

bench: setup
	$(BIN)/python bench/apply.py
	$(BIN)/python bench/forwarding.py
	$(BIN)/python bench/poll.py
	$(BIN)/python bench/history.py
	$(BIN)/python bench/web.py
	$(BIN)/python bench/sql.py
	$(BIN)/python bench/modbus_filter.py
	$(BIN)/python bench/fleet.py

# build/appliance_<version>_amd64.deb: the code, its pinned venv and system/ (scripts/build-deb).
deb: setup
	@scripts/build-deb

# build/appliance.img (GPT, ESP, root slots A and B, data) + .zst, .bmap, SHA256SUMS: root
# (scripts/build-image; the log in build/image.log).
image: setup-test
	@scripts/build-image

# build/appliance-<version>.raucb: the signed RAUC update bundle (verity) of the last `make
# image`'s root; the key from outside the repo: APPLIANCE_BUNDLE_KEY, APPLIANCE_BUNDLE_CERT
# (and APPLIANCE_UPDATE_KEYRING to check it); see docs/updates.md.
bundle: setup-test
	@scripts/build-bundle

clean:
	-$(BIN)/appliance lab down
	rm -rf $(VENV) .lab .pytest_cache .ruff_cache .hypothesis build
