# Sourced by the guest's scripts (guest.sh, bluetoothd.sh).
# shellcheck shell=bash

# Waits up to $1 seconds for the command after it to succeed, trying every $2 seconds. The
# deadline is on the clock, not a count of tries: under emulation a try can take seconds.
wait_for() {
  local deadline=$((SECONDS + $1)) every=$2
  shift 2
  while ((SECONDS < deadline)); do
    if "$@" >/dev/null 2>&1; then return 0; fi
    sleep "$every"
  done
  "$@" >/dev/null 2>&1
}
