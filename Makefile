# The contributor's inner loop. `./scripts/test.sh` (what CI runs) stays the full check.
#
#   make dev     build the extension in place (debug) into .venv, with the test tools
#   make lint    rustfmt, clippy, ruff, mypy: what CI checks first, in about a minute
#   make quick   the core's cargo tests and the main pytest modules on asyncio: under a minute
#   make test    everything, as CI runs it

VENV := .venv
PY := $(VENV)/bin/python
QUICK := tests/test_websocket.py tests/test_memory.py tests/test_protocol_edges.py \
	tests/test_limits.py tests/test_awareness.py tests/test_quickstart.py

.PHONY: dev lint quick test

$(PY):
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip "maturin>=1.9.4,<2"

dev: $(PY)
	. $(VENV)/bin/activate && maturin develop -q -E test

lint: $(PY)
	cargo fmt --all --check
	cargo clippy --workspace --all-targets -- -D warnings
	$(VENV)/bin/ruff check python tests bench
	$(VENV)/bin/ruff format --check python tests bench
	$(VENV)/bin/mypy

quick: dev
	cargo test -q -p wiredb-core --lib
	$(PY) -m pytest -c pyproject.toml --rootdir . -q -x -k asyncio $(QUICK)

test:
	./scripts/test.sh
