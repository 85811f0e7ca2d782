#!/usr/bin/env bash
# Build the load generator and the compiled peers into bench/bin.
# Needs Go >= 1.19 and a C compiler (Debian: apt-get install golang-go gcc),
# and the checkout's .venv (the README's quickstart) for the Python peers.
set -euo pipefail
BENCH=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$BENCH/.." && pwd)
mkdir -p "$BENCH/bin"
(cd "$BENCH/loadgen" && go vet . && go build -o "$BENCH/bin/loadgen" .)
(cd "$BENCH/peers/seedgo" && go vet . && go build -o "$BENCH/bin/seedgo" .)
gcc -O2 -Wall -Wextra -o "$BENCH/bin/limit_c" "$BENCH/peers/limit_c/limit_c.c"
if ! [ -x "$ROOT/.venv/bin/twistd" ]; then
  echo "no $ROOT/.venv/bin/twistd: make the checkout's venv first (README, Quickstart):" >&2
  echo "  python3 -m venv .venv && .venv/bin/pip install ." >&2
  exit 1
fi
echo "built: $(ls "$BENCH/bin" | tr '\n' ' ')"
