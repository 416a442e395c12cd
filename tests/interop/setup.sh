#!/usr/bin/env bash
# Installs the foreign peers of the interop tests from their registries:
# - npm: yjs, y-websocket, ws and @y/websocket-server, `npm ci` against package-lock.json;
# - PyPI: the original wiredb 0.7.1 (it pins pycrdt<0.13) and pycrdt-websocket (it pins
#   pycrdt>=0.14), each in its own virtual environment under .peers/.
# Each part is redone only when what it installs changed. PYTHON picks the interpreter of the
# virtual environments (default: python3).
set -euo pipefail
cd "$(dirname "$0")"
PYTHON=${PYTHON:-python3}

lock_stamp=$(sha256sum package-lock.json | cut -d' ' -f1)
if [ "$(cat node_modules/.installed 2>/dev/null)" != "$lock_stamp" ]; then
    echo "interop: npm ci"
    # No install scripts: nothing here needs one (y-leveldb's native module is optional and
    # unused; it ships prebuilt binaries anyway).
    npm ci --ignore-scripts --no-audit --no-fund --loglevel=error
    echo "$lock_stamp" > node_modules/.installed
fi

peer_venv() {
    local name=$1
    shift
    local dir=.peers/$name
    if [ "$(cat "$dir/.installed" 2>/dev/null)" = "$*" ]; then
        return
    fi
    echo "interop: $name virtual environment ($*)"
    rm -rf "$dir"
    "$PYTHON" -m venv "$dir"
    "$dir/bin/python" -m pip install -q --disable-pip-version-check "$@"
    echo "$*" > "$dir/.installed"
}

peer_venv wiredb-0.7.1 wiredb==0.7.1 wire-websocket==0.7.1
peer_venv pycrdt-websocket pycrdt-websocket==0.16.5 websockets==15.0.1
