#!/usr/bin/env bash
# The kill -9 loop at the issue's full count: 50 trials x 1,000 edits for each child (a file
# client, a server), each fsync policy and each event loop (asyncio, trio). A child prints each
# edit once flush() acknowledged it and is killed (SIGKILL) at a random point; after each kill
# the file must load and hold every acknowledged edit. CI runs the same test at 5 x 200.
#
#     ./scripts/kill_loop.sh [pytest args, e.g. -k "client and always"]
#
# Needs the package installed in .venv (scripts/test.sh or `maturin develop`).
set -euo pipefail
cd "$(dirname "$0")/.."
. .venv/bin/activate
export WIREDB_KILL_TRIALS="${WIREDB_KILL_TRIALS:-50}" WIREDB_KILL_EDITS="${WIREDB_KILL_EDITS:-1000}"
# A `-k EXPR` of the caller narrows the loop (pytest keeps only the last -k, so it is combined
# with ours instead of replacing it).
expr=kill
args=()
while [ $# -gt 0 ]; do
    case "$1" in
        -k) expr="kill and ($2)"; shift 2 ;;
        *) args+=("$1"); shift ;;
    esac
done
# A private base temp dir: pytest's default one is pruned by other pytest runs as root.
exec python -m pytest -c pyproject.toml --rootdir . -p no:cacheprovider -s -q \
    --basetemp "${TMPDIR:-/tmp}/wiredb-kill-loop" tests/test_durability.py -k "$expr" "${args[@]}"
