#!/usr/bin/env bash
# Benchmarks hybridge-relay on this machine: builds release, starts the relay on loopback
# (plain ws), runs `relay-load suite` against it and prints one table, then two short extras:
# single-message latency with `--busy-poll`, and the same pairing loop against
# examples/floor.rs (a bare epoll relay: the kernel's share of a pairing, for scale).
#
#   relay/bench/run.sh                      # the full suite (30,000 pairings x 3, 9,000 tunnels)
#   relay/bench/run.sh --hold 1000 --pairings 5000 --seconds 2   # a quicker run
#   RELAY_ARGS="--log debug" relay/bench/run.sh                   # relay options
#   EXTRAS=0 relay/bench/run.sh                                   # the suite only
#
# Extra arguments go to `relay-load suite` (see `relay-load suite --help`). The relay gets
# the limits a load test needs: no per-IP rate limit and no per-tunnel message limit.
#
# Isolation, so that runs are comparable:
# - As root with `unshare`, each part runs in a fresh network namespace: no TIME_WAIT
#   sockets or connections left by earlier runs (NETNS=0 to use the current one).
# - With two or more CPUs the relay runs on CPU 1 and the load tool on CPU 0, so the two
#   never queue behind each other and the scheduler cannot move them mid-run (PIN=0 to let
#   the scheduler place them).
set -euo pipefail
cd "$(dirname "$0")/../.."

if [ -z "${BENCH_PART:-}" ]; then
  export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-target}"
  cargo build --release -q -p hybridge-relay --bins --example floor
  echo "machine: $(nproc) CPUs; load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
  isolate=()
  if [ "${NETNS:-1}" = 1 ] && [ "$(id -u)" = 0 ] && command -v unshare >/dev/null \
    && command -v ip >/dev/null; then
    isolate=(unshare --net --)
    echo "network: a fresh namespace (loopback only) for each part"
  fi
  BENCH_PART=suite "${isolate[@]}" "$0" "$@"
  if [ "${EXTRAS:-1}" = 1 ]; then
    echo
    echo "extra: one message in flight, the load tool sleeping, relay with --busy-poll 30us"
    BENCH_PART=busy "${isolate[@]}" "$0"
    echo
    echo "extra: the same pairing loop against examples/floor.rs (bare epoll, nothing else)"
    BENCH_PART=floor "${isolate[@]}" "$0" "$@"
  fi
  echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
  exit 0
fi

bin="$(cd "$CARGO_TARGET_DIR/release" && pwd)"
if [ "$(id -u)" = 0 ] && command -v ip >/dev/null; then ip link set lo up 2>/dev/null || true; fi
relay_cpu=() load_cpu=()
if [ "${PIN:-1}" = 1 ] && [ "$(nproc)" -ge 2 ] && command -v taskset >/dev/null; then
  relay_cpu=(taskset -c 1) load_cpu=(taskset -c 0)
  [ "$BENCH_PART" = suite ] && echo "placement: relay on CPU 1, load tool on CPU 0"
fi

port="${PORT:-18480}"
out="$(mktemp)"
case "$BENCH_PART" in
  floor) server=("$bin/examples/floor" "$port") ;;
  busy) server=("$bin/hybridge-relay" --listen "127.0.0.1:$port" --rate-per-ip 0
    --max-messages 0 --log warn --busy-poll 30us) ;;
  *) server=("$bin/hybridge-relay" --listen "127.0.0.1:$port" --rate-per-ip 0
    --max-messages 0 --log warn ${RELAY_ARGS:-}) ;;
esac
"${relay_cpu[@]}" "${server[@]}" >"$out" &
pid=$!
trap 'kill "$pid" 2>/dev/null || true; rm -f "$out"' EXIT
for _ in $(seq 100); do [ -s "$out" ] && break; sleep 0.05; done
[ -s "$out" ] || { echo "server did not start" >&2; exit 1; }
load=("${load_cpu[@]}" "$bin/relay-load")
url="ws://127.0.0.1:$port"
case "$BENCH_PART" in
  suite)
    echo "relay: $(cat "$out")${RELAY_ARGS:+ (options: $RELAY_ARGS)}"
    "${load[@]}" suite --url "$url" --pid "$pid" "$@"
    ;;
  busy)
    "${load[@]}" latency --url "$url" --pid "$pid" --in-flight 1 --seconds 5 | sed -n '3,$p'
    ;;
  floor)
    # The suite's pairing arguments, if given, apply here too.
    count=30000 workers=64
    while [ $# -gt 0 ]; do
      case "$1" in
        --pairings) count="$2"; shift ;;
        --workers) workers="$2"; shift ;;
      esac
      shift
    done
    for run in 1 2 3; do
      "${load[@]}" pairing --url "$url" --pid "$pid" --count "$count" --workers "$workers" \
        | sed -n "$([ $run = 1 ] && echo 1 || echo 3),4p"
    done
    ;;
esac
