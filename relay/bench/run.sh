#!/usr/bin/env bash
# Benchmarks hybridge-relay on this machine: builds release, starts the relay on loopback
# (plain ws), runs `relay-load suite` against it and prints one table.
#
#   relay/bench/run.sh                      # the full suite (30,000 pairings x 3, 9,000 tunnels)
#   relay/bench/run.sh --hold 1000 --pairings 5000 --seconds 2   # a quicker run
#   RELAY_ARGS="--busy-poll 50us" relay/bench/run.sh              # relay options
#
# Extra arguments go to `relay-load suite` (see `relay-load suite --help`). The relay gets
# the limits a load test needs: no per-IP rate limit and no per-tunnel message limit.
#
# Isolation, so that runs are comparable:
# - As root with `unshare`, everything runs in a fresh network namespace: no TIME_WAIT
#   sockets or connections left by earlier runs (NETNS=0 to use the current one).
# - With two or more CPUs the relay runs on CPU 1 and the load tool on CPU 0, so the two
#   never queue behind each other and the scheduler cannot move them mid-run (PIN=0 to let
#   the scheduler place them).
set -euo pipefail
cd "$(dirname "$0")/../.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-target}"
cargo build --release -q -p hybridge-relay --bins
bin="$(cd "$CARGO_TARGET_DIR/release" && pwd)"

if [ "${IN_NETNS:-0}" != 1 ] && [ "${NETNS:-1}" = 1 ] && [ "$(id -u)" = 0 ] \
  && command -v unshare >/dev/null && command -v ip >/dev/null; then
  export IN_NETNS=1 CARGO_TARGET_DIR
  exec unshare --net -- "$0" "$@"
fi
if [ "${IN_NETNS:-0}" = 1 ]; then
  ip link set lo up
  echo "network: a fresh namespace (loopback only)"
fi

relay_cpu=() load_cpu=()
if [ "${PIN:-1}" = 1 ] && [ "$(nproc)" -ge 2 ] && command -v taskset >/dev/null; then
  relay_cpu=(taskset -c 1) load_cpu=(taskset -c 0)
  echo "placement: relay on CPU 1, load tool on CPU 0"
fi

port="${PORT:-18480}"
out="$(mktemp)"
"${relay_cpu[@]}" "$bin/hybridge-relay" --listen "127.0.0.1:$port" --rate-per-ip 0 \
  --max-messages 0 --log warn ${RELAY_ARGS:-} >"$out" &
pid=$!
trap 'kill "$pid" 2>/dev/null || true; rm -f "$out"' EXIT
for _ in $(seq 100); do [ -s "$out" ] && break; sleep 0.05; done
[ -s "$out" ] || { echo "relay did not start" >&2; exit 1; }
echo "relay: $(cat "$out")${RELAY_ARGS:+ (options: $RELAY_ARGS)}"
echo "machine: $(nproc) CPUs; load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
"${load_cpu[@]}" "$bin/relay-load" suite --url "ws://127.0.0.1:$port" --pid "$pid" "$@"
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
