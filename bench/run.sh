#!/bin/sh
# Builds the release binary and runs the side-by-side benchmark (see BENCHMARKS.md).
#   bench/run.sh            100,000 interactions (about 2 minutes plus a one-off log generation)
#   bench/run.sh --1m       also 1,000,000 interactions (about 6 more minutes, 1.5 GB log)
# Other arguments go to bench/bench.py (e.g. --skip-seed, --only ingest,export, --json out.json).
set -e
cd "$(dirname "$0")/.."
cargo build --release --quiet
if [ "$1" = "--1m" ]; then
    shift
    set -- --sizes 100000,1000000 "$@"
fi
exec python3 bench/bench.py "$@"
