#!/usr/bin/env bash
# Benchmarks hybridge-relay on this machine: builds release, starts the relay on loopback
# (plain ws), runs `relay-load suite` against it and prints one table.
#
#   relay/bench/run.sh                      # the full suite (9,000 tunnels, 30,000 pairings)
#   relay/bench/run.sh --hold 1000 --pairings 5000 --seconds 2   # a quicker run
#
# Extra arguments go to `relay-load suite` (see `relay-load suite --help`). The relay gets
# the limits a load test needs: no per-IP rate limit and no per-tunnel message limit.
set -euo pipefail
cd "$(dirname "$0")/../.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-target}"
cargo build --release -q -p hybridge-relay --bins
bin="$CARGO_TARGET_DIR/release"
port="${PORT:-18480}"
out="$(mktemp)"
"$bin/hybridge-relay" --listen "127.0.0.1:$port" --rate-per-ip 0 --max-messages 0 \
  --log warn ${RELAY_ARGS:-} >"$out" &
pid=$!
trap 'kill "$pid" 2>/dev/null || true; rm -f "$out"' EXIT
for _ in $(seq 100); do [ -s "$out" ] && break; sleep 0.05; done
[ -s "$out" ] || { echo "relay did not start" >&2; exit 1; }
echo "relay: $(cat "$out")"
echo "machine: $(nproc) CPUs; load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
"$bin/relay-load" suite --url "ws://127.0.0.1:$port" --pid "$pid" "$@"
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
