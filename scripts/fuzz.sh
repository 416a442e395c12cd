#!/usr/bin/env bash
# The fuzzing soak: runs every cargo-fuzz target for SECONDS each (default 600) on stable Rust
# (`-O -s none`: optimized, no sanitizer), then files any input that crashed a target under
# fuzz/regressions/<target>/, where `cargo test` replays it from then on.
#   scripts/fuzz.sh [SECONDS] [TARGET...]
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${1:-600}"
shift || true
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(codec room awareness file_log)
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked

status=0
for target in "${targets[@]}"; do
    mkdir -p "fuzz/corpus/$target"
    # Start from the saved regressions: known-hard inputs are the best seeds.
    cp -n fuzz/regressions/"$target"/* "fuzz/corpus/$target/" 2>/dev/null || true
    echo "== fuzzing $target for ${seconds}s"
    if ! cargo fuzz run "$target" -O -s none "fuzz/corpus/$target" -- \
        -max_total_time="$seconds" -rss_limit_mb=2048 -max_len=65536; then
        status=1
    fi
    for crash in fuzz/artifacts/"$target"/*; do
        [ -f "$crash" ] || continue
        mv "$crash" "fuzz/regressions/$target/"
        echo "saved $(basename "$crash") to fuzz/regressions/$target/" >&2
    done
done
exit "$status"
