#!/bin/bash
# shellcheck disable=SC2317 # functions called through wait_for look unreachable to it
# The VM tier's second stage, run by the initramfs as PID 1 inside the guest (see run.sh):
# the host's files are the root (read-only, under a tmpfs overlay), /proc, /sys and /dev are
# mounted. This sets up the rest (tmpfs, the job and shared directories, kernel modules,
# loopback, D-Bus, two btvirt controllers, bluetoothd), runs the job's command, records its
# exit status and powers the guest off. Nothing here is meant to run on the host.
set -uo pipefail
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin

job=/run/hybridge-vm
setup_log=/dev/console

log() {
  local up
  up=$(cut -d' ' -f1 /proc/uptime)
  echo "[$up] $*" >>"$setup_log"
}

# Ends the guest. Also the end when setup fails: the host then reports the setup log.
power_off() {
  sync
  /bin/busybox poweroff -f
  # Not reached; if it were, PID 1 exiting panics the kernel, and panic=-1 with QEMU's
  # -no-reboot ends the guest as well.
  exit 1
}

fail() {
  log "setup failed: $*"
  if [ -d "$job/logs" ]; then dmesg >"$job/logs/dmesg.log" 2>&1; fi
  power_off
}

# shellcheck source=tests/vm/wait.sh
. "$(dirname "${BASH_SOURCE[0]}")/wait.sh"

# --- file systems -----------------------------------------------------------------------------
mount -t tmpfs -o mode=1777 tmpfs /tmp || fail "mount /tmp"
mount -t tmpfs -o mode=0755 tmpfs /run || fail "mount /run"
mkdir -p /dev/pts /dev/shm
# What udev or systemd would link in /dev: bash's <(...) needs /dev/fd.
ln -sfn /proc/self/fd /dev/fd
ln -sfn /proc/self/fd/0 /dev/stdin
ln -sfn /proc/self/fd/1 /dev/stdout
ln -sfn /proc/self/fd/2 /dev/stderr
mount -t devpts -o gid=5,mode=620,ptmxmode=666 devpts /dev/pts || fail "mount /dev/pts"
mount -t tmpfs -o mode=1777 tmpfs /dev/shm || fail "mount /dev/shm"
mkdir -p "$job"
mount -t 9p -o trans=virtio,version=9p2000.L,msize=512000 job "$job" || fail "mount the job directory"
setup_log=$job/logs/setup.log
log "job directory mounted"

i=0
while IFS= read -r -d '' dir; do
  mkdir -p "$dir" || fail "create the mount point $dir"
  mount -t 9p -o trans=virtio,version=9p2000.L,msize=512000 "share$i" "$dir" ||
    fail "mount --share $dir"
  i=$((i + 1))
done <"$job/shares"

# The guest kernel's modules, where modprobe looks for them.
moddir=$(cat "$job/moddir")
kver=$(uname -r)
mkdir -p "/lib/modules/$kver"
mount --bind "$moddir" "/lib/modules/$kver" || fail "bind the kernel modules"

hostname hybridge-vm
ip link set lo up || fail "bring the loopback interface up"

# No udev: nothing loads drivers on demand. hid_generic gives UHID devices a hidraw node.
modprobe -a hci_vhci uhid hid_generic || fail "modprobe hci_vhci uhid hid_generic"
[ -e /dev/uhid ] || fail "no /dev/uhid after modprobe uhid"
log "modules loaded"

# --- D-Bus, two controllers, bluetoothd -----------------------------------------------------
mkdir -p /run/dbus
dbus-daemon --system --fork >>"$job/logs/dbus.log" 2>&1 || fail "start the system D-Bus"
wait_for 10 0.1 test -S /run/dbus/system_bus_socket || fail "the system D-Bus socket did not appear"
log "system D-Bus running"

# Both controllers from one btvirt (they hear each other), LE only. bluetoothd starts only
# after both are registered: started together under emulation, one controller's reset times
# out and it never appears.
both_controllers() {
  local info
  info=$(timeout -k 2 5 btmgmt info 2>/dev/null) || return 1
  grep -q '^hci0:' <<<"$info" && grep -q '^hci1:' <<<"$info"
}
# The kernel sends a new controller HCI Reset at once and gives up after 2 s; under emulation
# btvirt, still starting up, sometimes answers too late ("hci0: Opcode 0x0c03 failed: -110")
# and that controller never appears. Loading beforehand the crypto modules that would
# otherwise be loaded on demand (one modprobe each, seconds under emulation) made it rarer;
# when it still happens, start btvirt again, a few times.
modprobe -a af_alg algif_hash algif_skcipher cmac ecb ccm aesni_intel ||
  fail "modprobe the crypto modules btvirt uses"
failed_commands() {
  dmesg | grep -c 'Bluetooth: hci[0-9]*: Opcode .* failed'
}
# Both controllers listed: 0; a controller's command failed (it will never appear): 1; neither
# yet after 20 s: 1.
controllers_up() {
  local before=$1 deadline=$((SECONDS + 20))
  while ((SECONDS < deadline)); do
    if both_controllers; then return 0; fi
    if (($(failed_commands) > before)); then return 1; fi
    sleep 0.5
  done
  return 1
}
btvirt_pid=
for attempt in 1 2 3; do
  before=$(failed_commands)
  btvirt -L -l2 >>"$job/logs/btvirt.log" 2>&1 &
  btvirt_pid=$!
  if controllers_up "$before"; then
    break
  fi
  log "btvirt attempt $attempt: not both controllers: $(dmesg | grep 'Bluetooth: hci[0-9]*: Opcode' | tail -n 1)"
  kill "$btvirt_pid" 2>/dev/null
  wait "$btvirt_pid" 2>/dev/null
  btvirt_pid=
  wait_for 10 0.2 test ! -e /sys/class/bluetooth/hci0 -a ! -e /sys/class/bluetooth/hci1
done
[ -n "$btvirt_pid" ] || fail "btvirt did not provide hci0 and hci1 in 3 attempts"
log "btvirt: hci0 and hci1 registered (attempt $attempt)"

"$(dirname "$0")/bluetoothd.sh" >>"$setup_log" 2>&1 || fail "bluetoothd is not ready"
log "bluetoothd running; hci0 and hci1 powered"
cut -d' ' -f1 /proc/modules | sort >"$job/logs/modules.txt"

# --- the command ------------------------------------------------------------------------------
mapfile -t -d '' cmd <"$job/cmd"
# CMD's standard input is empty but never ends, like a terminal nobody types on: BlueZ's
# interactive tools (btmgmt, bluetoothctl) quit at the end of their input before BlueZ answers.
mkfifo /run/hybridge-vm-stdin
exec 3<>/run/hybridge-vm-stdin
cwd=$(cat "$job/cwd")
log "running: ${cmd[*]}"
(
  # shellcheck disable=SC1091 # written by run.sh for this job
  . "$job/env"
  export HYBRIDGE_VM=1
  cd "$cwd" || exit 125
  exec "${cmd[@]}"
) </run/hybridge-vm-stdin 3>&- >>"$job/stdout" 2>>"$job/stderr"
status=$?
log "exit status $status"
echo "$status" >"$job/status"
power_off
