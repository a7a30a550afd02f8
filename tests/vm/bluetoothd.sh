#!/bin/bash
# Starts bluetoothd inside the VM tier's guest and waits until both btvirt controllers (hci0,
# hci1) are on D-Bus and powered. tests/vm/guest.sh runs it at boot; a test that stopped
# bluetoothd runs it to restore the guest for the tests after it. Exits non-zero, saying
# why, if BlueZ is not ready within 30 s. Not for the host.
# shellcheck disable=SC2317 # functions called through wait_for look unreachable to it
set -uo pipefail

logs=/run/hybridge-vm/logs
[ -n "${HYBRIDGE_VM:-}" ] || [ -d "$logs" ] || {
  echo "bluetoothd.sh: runs inside the VM tier's guest only (tests/vm/run.sh)" >&2
  exit 2
}

# shellcheck source=tests/vm/wait.sh
. "$(dirname "${BASH_SOURCE[0]}")/wait.sh"

# btmgmt quits when its input ends, before the kernel answers: give it input that lasts.
btmgmt_q() {
  timeout -k 2 5 btmgmt "$@" < <(sleep 6)
}

bluez_adapters() {
  local objects
  objects=$(timeout -k 2 5 dbus-send --system --print-reply --dest=org.bluez / \
    org.freedesktop.DBus.ObjectManager.GetManagedObjects 2>/dev/null) || return 1
  grep -q '"/org/bluez/hci0"' <<<"$objects" && grep -q '"/org/bluez/hci1"' <<<"$objects"
}

powered() {
  btmgmt_q --index "$1" info 2>/dev/null | grep -q 'current settings:.*powered'
}

bluetoothd=/usr/libexec/bluetooth/bluetoothd
[ -x "$bluetoothd" ] || bluetoothd=/usr/sbin/bluetoothd
mkdir -p "$logs"
setsid "$bluetoothd" --nodetach --debug </dev/null >>"$logs/bluetoothd.log" 2>&1 &

wait_for 30 0.5 bluez_adapters || {
  echo "bluetoothd did not show hci0 and hci1 on D-Bus within 30 s" >&2
  exit 1
}
# bluetoothd powers controllers on (AutoEnable); make sure, and wait until both say so.
for index in 0 1; do
  powered "$index" || btmgmt_q --index "$index" power on >/dev/null 2>&1 || true
  wait_for 15 0.5 powered "$index" || {
    echo "hci$index did not power on within 15 s" >&2
    exit 1
  }
done
