#!/usr/bin/env bash
# Installs everything the test suite needs (a virtualenv in .venv, the wheel built from this
# checkout, the test tools) and runs every check: Rust format, lints and tests, the Python
# build, ruff, mypy, and pytest on asyncio and trio.
set -euo pipefail
cd "$(dirname "$0")/.."

python3 -m venv .venv
. .venv/bin/activate
python -m pip install -q --upgrade pip
python -m pip install -q "maturin>=1.9.4,<2"

echo "== system tools: strace (the crash-point and EIO tests inject faults with it)"
if ! command -v strace >/dev/null 2>&1; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        apt-get update -qq && apt-get install -y -qq strace >/dev/null
    else
        echo "warning: strace is missing: those tests are skipped (they fail with CI=true)" >&2
    fi
fi

echo "== cargo fmt / clippy / test"
cargo fmt --all --check
cargo clippy --workspace --all-targets -- -D warnings
cargo test --workspace

echo "== python build (a wheel, installed as users get it)"
rm -rf dist
maturin build --release --out dist
python -m pip install -q --force-reinstall "$(ls dist/wiredb-*.whl)[test]"

echo "== ruff / mypy"
ruff check python tests
ruff format --check python tests
mypy
python -m mypy.stubtest wiredb._wiredb

echo "== the original wiredb/wire-file 0.7.1 (for the cross-implementation file tests)"
# They need pycrdt<0.13, so they live in a virtualenv of their own. A failure here is not fatal
# yet: the tests retry the install and, with CI=true, fail if it still does not work.
original=(wiredb==0.7.1 wire-file==0.7.1)
if [ "$(cat .venv-original/installed.txt 2>/dev/null)" != "${original[*]}" ]; then
    if python3 -m venv --clear .venv-original \
        && .venv-original/bin/python -m pip install -q "${original[@]}"; then
        echo "${original[*]}" > .venv-original/installed.txt
    else
        echo "warning: could not install ${original[*]}" >&2
    fi
fi

echo "== pytest"
# Run from outside the source tree so that the installed wheel is what is tested.
set +e
python -m pytest -c pyproject.toml --rootdir . "$@"
status=$?
set -e
if [ "$status" -eq 5 ]; then
    echo "pytest collected no tests: that is a failure" >&2
    exit 1
fi
exit "$status"
