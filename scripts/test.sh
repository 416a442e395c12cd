#!/usr/bin/env bash
# Installs everything the test suite needs (a virtualenv in .venv, the wheel built from this
# checkout, the test tools, the interop peers) and runs every check: Rust format, lints and
# tests, the Python build, ruff, mypy, and pytest on asyncio and trio, with the newest pycrdt
# and again with the oldest one supported (0.12.41, in .venv-pycrdt012).
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
ruff check python tests bench
ruff format --check python tests bench
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

echo "== benchmark smoke run: wiredb-loadgen against the installed server, convergence only"
cargo build -p wiredb-bench
python bench/run.py --smoke --python "$(command -v python)" --loadgen target/debug/wiredb-loadgen

echo "== interop peers (npm ci, PyPI peers in their own virtualenvs)"
# A failure here is not fatal by itself: the interop tests then fail (CI=true) or skip.
interop_status=0
PYTHON=python3 tests/interop/setup.sh || interop_status=$?
if [ "$interop_status" -ne 0 ]; then
    echo "interop peers could not all be installed (status $interop_status)" >&2
fi

run_pytest() {
    # Run from the root, with the installed wheel (not python/) on the path.
    local status=0
    "$1" -m pytest -c pyproject.toml --rootdir . "${@:2}" || status=$?
    if [ "$status" -eq 5 ]; then
        echo "pytest collected no tests: that is a failure" >&2
        status=1
    fi
    return "$status"
}

echo "== pytest (pycrdt $(python -c 'import importlib.metadata as m; print(m.version("pycrdt"))'))"
status=0
run_pytest python "$@" || status=$?

echo "== pytest again on the oldest pycrdt supported (0.12.41), same wheel"
python3 -m venv .venv-pycrdt012
.venv-pycrdt012/bin/python -m pip install -q --upgrade pip
.venv-pycrdt012/bin/python -m pip install -q "$(ls dist/wiredb-*.whl)[test]" "pycrdt==0.12.41"
.venv-pycrdt012/bin/python -m pip install -q --force-reinstall --no-deps "$(ls dist/wiredb-*.whl)"
old_status=0
run_pytest .venv-pycrdt012/bin/python "$@" || old_status=$?

if [ "$status" -ne 0 ] || [ "$old_status" -ne 0 ]; then
    echo "pytest failed: newest pycrdt $status, pycrdt 0.12.41 $old_status" >&2
    exit 1
fi
