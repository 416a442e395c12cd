#!/usr/bin/env bash
# wiredb's benchmark suite against its peers, in one command.
#
#   scripts/bench.sh                 # build, install the peers, run everything (a few minutes)
#   scripts/bench.sh --smoke         # convergence only, wiredb only (what CI runs)
#   scripts/bench.sh --servers wiredb,node --workloads w1,w5     # a subset
#
# Builds the load generator (target/release/wiredb-loadgen) and a release wheel of this checkout,
# installs the peers from the registries into bench/out/ (git-ignored): the original wiredb 0.7.1
# server (wire-websocket 0.7.1, with pycrdt<0.13), pycrdt-websocket, and the Node
# @y/websocket-server 0.1.1 with yjs 13. Then bench/run.py runs every workload against each,
# the server on core 0 and the load generator on core 1, prints the table and writes
# bench/out/results.json.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=bench/out
mkdir -p "$OUT"

smoke=0
for arg in "$@"; do
    [ "$arg" = "--smoke" ] && smoke=1
done

echo "== build: load generator and wheel (release)" >&2
cargo build --release -p wiredb-bench
python3 -m venv "$OUT/venv-wiredb"
"$OUT/venv-wiredb/bin/python" -m pip install -q "maturin>=1.9.4,<2"
rm -rf "$OUT/dist"
"$OUT/venv-wiredb/bin/maturin" build --release --out "$OUT/dist" >&2
"$OUT/venv-wiredb/bin/python" -m pip install -q --force-reinstall "$(ls "$OUT"/dist/wiredb-*.whl)"

# Each peer is installed once; a marker file names what was installed.
install_venv() {  # name, packages...
    local name=$1
    shift
    if [ "$(cat "$OUT/$name/installed.txt" 2>/dev/null)" != "$*" ]; then
        python3 -m venv --clear "$OUT/$name"
        "$OUT/$name/bin/python" -m pip install -q "$@"
        echo "$*" > "$OUT/$name/installed.txt"
    fi
}

if [ "$smoke" = 0 ]; then
    echo "== peers (into $OUT)" >&2
    install_venv venv-orig "wiredb==0.7.1" "wire-websocket==0.7.1" "pycrdt<0.13"
    install_venv venv-pcws "pycrdt-websocket==0.16.5" "websockets>=14" "anyio>=4"
    node_pkgs="@y/websocket-server@0.1.1 yjs@13"
    if [ "$(cat "$OUT/node/installed.txt" 2>/dev/null)" != "$node_pkgs" ]; then
        rm -rf "$OUT/node" && mkdir -p "$OUT/node"
        (cd "$OUT/node" && npm init -y >/dev/null && npm install --no-audit --no-fund $node_pkgs >&2)
        echo "$node_pkgs" > "$OUT/node/installed.txt"
    fi
fi

echo "== run" >&2
exec python3 bench/run.py "$@"
