#!/usr/bin/env bash
# The VM tier: runs a command, or the project's VM test suite, inside a small QEMU guest that
# has what this machine's kernel lacks: two emulated Bluetooth LE controllers (btvirt on
# hci_vhci, hci0 for the laptop and hci1 for the phone), bluetoothd, and /dev/uhid.
#
#   tests/vm/run.sh [OPTIONS] -- CMD [ARGS...]   run CMD in the guest, in the current directory
#   tests/vm/run.sh [OPTIONS]                    build, then run the VM tests (vm:: in e2e)
#   tests/vm/run.sh --prepare                    only fetch the kernel and build the initramfs
#
# The guest runs Debian's stock kernel (fetched with `apt-get download`, never installed as the
# host's kernel) on the host's own files: the host's / over virtio-9p, read-only, under an
# overlay with a tmpfs on top, so every path is the same inside and anything written inside
# is thrown away. /tmp and /run are fresh tmpfs. Each --share DIR is mounted writable at the
# same path, so results can be written back. CMD's stdout and stderr arrive on this script's
# stdout and stderr, and its exit status is this script's. CMD's stdin is empty and never
# ends (BlueZ's interactive tools quit at the end of their input before BlueZ answers).
#
# Options:
#   --share DIR      make DIR (on the host) writable in the guest, at the same path
#   --env NAME=VAL   set an environment variable for CMD (see below for what is passed anyway)
#   --timeout SECS   tear the guest down after SECS seconds (default 600; 2400 for the suite,
#                    whose browser test alone starts Firefox for minutes under emulation)
#   --logs DIR       copy the guest's logs (console, btvirt, bluetoothd, dbus) to DIR
#   --memory MB      guest memory (default 2048; 3072 for the suite, which runs Firefox)
#   -v, --verbose    show the guest's console and setup progress on stderr
#   --filter NAME    the suite: run only the vm:: tests whose name contains NAME (repeatable)
#   --skip NAME      the suite: leave out the tests whose name contains NAME (repeatable)
#   --prepare        fetch the kernel and build the initramfs if they are not cached, then stop
#
# Exit status: CMD's own; 124 on timeout; 125 when the guest could not be set up; 130 on
# Ctrl-C. Set HYBRIDGE_VM_CACHE to keep the kernel and initramfs elsewhere than
# /var/cache/hybridge-vm (or ~/.cache/hybridge-vm when not root).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)

shares=()
envs=()
# The suite's selection: libtest filters (default: every vm:: test) and --skip patterns.
filters=()
skips=()
timeout_secs=600
timeout_given=0
logs_dir=
memory=2048
memory_given=0
verbose=0
cmd=()
have_cmd=0
prepare=0

die() {
  echo "vm: $*" >&2
  exit 125
}
say() {
  if [ "$verbose" = 1 ]; then echo "vm: $*" >&2; fi
}

while [ $# -gt 0 ]; do
  case "$1" in
  --share)
    [ $# -ge 2 ] || die "--share needs a directory"
    [ -d "$2" ] || die "--share $2: not a directory"
    shares+=("$(cd "$2" && pwd)")
    shift 2
    ;;
  --env)
    [ $# -ge 2 ] || die "--env needs NAME=VALUE"
    [[ "$2" =~ ^[A-Za-z_][A-Za-z0-9_]*= ]] || die "--env $2: expected NAME=VALUE"
    envs+=("$2")
    shift 2
    ;;
  --timeout)
    [ $# -ge 2 ] || die "--timeout needs a number of seconds"
    [[ "$2" =~ ^[1-9][0-9]*$ ]] || die "--timeout $2: expected a whole number of seconds"
    timeout_secs=$2
    timeout_given=1
    shift 2
    ;;
  --logs)
    [ $# -ge 2 ] || die "--logs needs a directory"
    logs_dir=$2
    shift 2
    ;;
  --memory)
    [ $# -ge 2 ] || die "--memory needs a size in MB"
    [[ "$2" =~ ^[1-9][0-9]*$ ]] || die "--memory $2: expected megabytes"
    memory=$2
    memory_given=1
    shift 2
    ;;
  --filter)
    [ $# -ge 2 ] || die "--filter needs a test name or part of one"
    filters+=("$2")
    shift 2
    ;;
  --skip)
    [ $# -ge 2 ] || die "--skip needs a test name or part of one"
    skips+=(--skip "$2")
    shift 2
    ;;
  -v | --verbose)
    verbose=1
    shift
    ;;
  --prepare)
    prepare=1
    shift
    ;;
  -h | --help)
    sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//'
    exit 0
    ;;
  --)
    shift
    have_cmd=1
    cmd=("$@")
    [ ${#cmd[@]} -gt 0 ] || die "nothing after --: give a command to run in the guest"
    break
    ;;
  *) die "unknown argument $1 (see --help; a command goes after --)" ;;
  esac
done

# ---------------------------------------------------------------------------------------------
# What the host needs. Each missing piece is named with the Debian package that provides it.

need_pkgs=()
command -v qemu-system-x86_64 >/dev/null 2>&1 || need_pkgs+=(qemu-system-x86)
[ -x /bin/busybox ] || need_pkgs+=(busybox-static)
command -v depmod >/dev/null 2>&1 || need_pkgs+=(kmod)
command -v btvirt >/dev/null 2>&1 || need_pkgs+=(bluez-test-tools)
command -v btmgmt >/dev/null 2>&1 || need_pkgs+=(bluez)
[ -x /usr/sbin/bluetoothd ] || [ -x /usr/libexec/bluetooth/bluetoothd ] || need_pkgs+=(bluez)
command -v dbus-daemon >/dev/null 2>&1 || need_pkgs+=(dbus-daemon)
command -v dpkg-deb >/dev/null 2>&1 || need_pkgs+=(dpkg)
command -v ip >/dev/null 2>&1 || need_pkgs+=(iproute2)
if [ ${#need_pkgs[@]} -gt 0 ]; then
  declare -A seen=()
  missing=()
  for pkg in "${need_pkgs[@]}"; do
    if [ -z "${seen[$pkg]:-}" ]; then missing+=("$pkg"); fi
    seen[$pkg]=1
  done
  die "the VM tier needs ${missing[*]}: apt-get install ${missing[*]}"
fi
if [ -x /bin/busybox ] && ! /bin/busybox --list | grep -qx switch_root; then
  die "/bin/busybox has no switch_root applet: apt-get install busybox-static"
fi

# ---------------------------------------------------------------------------------------------
# The kernel: Debian's linux-image-amd64, unpacked into the cache, with modules.dep made by
# depmod (the package ships none). Built once per kernel version.

if [ -n "${HYBRIDGE_VM_CACHE:-}" ]; then
  cache=$HYBRIDGE_VM_CACHE
elif [ "$(id -u)" = 0 ]; then
  cache=/var/cache/hybridge-vm
else
  cache=${XDG_CACHE_HOME:-$HOME/.cache}/hybridge-vm
fi
mkdir -p "$cache"

# The kernel package the metapackage points at, e.g. linux-image-6.1.0-57-amd64.
kpkg=$(apt-cache depends linux-image-amd64 2>/dev/null | sed -n 's/^ *Depends: \(linux-image-[0-9].*\)$/\1/p' | head -n 1)
if [ -z "$kpkg" ]; then
  # No apt metadata (or no network for it): use whatever kernel is already unpacked.
  kpkg=$(find "$cache" -maxdepth 1 -name 'linux-image-*' -type d -printf '%f\n' 2>/dev/null | sort -V | tail -n 1)
  [ -n "$kpkg" ] || die "cannot find Debian's kernel package: run apt-get update (linux-image-amd64 must be known to apt)"
fi
kver=${kpkg#linux-image-}
ktree=$cache/$kpkg
kernel=$ktree/boot/vmlinuz-$kver

if [ ! -f "$ktree/.complete" ]; then
  echo "vm: fetching $kpkg with apt-get download (once; cached in $cache)" >&2
  work=$(mktemp -d "$cache/.fetch.XXXXXX")
  # Download as root without apt's _apt sandbox user, who cannot write the cache directory.
  if ! (cd "$work" && apt-get download -q -o APT::Sandbox::User=root "$kpkg" >/dev/null); then
    rm -rf "$work"
    die "apt-get download $kpkg failed (is Debian's mirror reachable? try apt-get update)"
  fi
  rm -rf "$ktree"
  mkdir -p "$ktree"
  dpkg-deb -x "$work"/"$kpkg"_*.deb "$ktree"
  rm -rf "$work"
  depmod -b "$ktree" "$kver"
  touch "$ktree/.complete"
fi
[ -f "$kernel" ] || die "no kernel at $kernel: remove $ktree and run again"
moddir=$ktree/lib/modules/$kver
[ -d "$moddir" ] || die "no modules at $moddir: remove $ktree and run again"

# ---------------------------------------------------------------------------------------------
# The initramfs: busybox and the modules that reach the host's files (virtio-pci, 9p,
# overlay), loaded in dependency order. Its init mounts the host's / read-only over 9p under
# an overlay with a tmpfs upper, and switches to it to run tests/vm/guest.sh. Rebuilt when
# this script or the kernel changes (the file name holds a hash of both).

initramfs_init() {
  cat <<'EOF'
#!/bin/busybox sh
/bin/busybox --install -s /bin
export PATH=/bin
mkdir -p /proc /sys /dev /lower /rw /newroot
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
fail() { echo "hybridge-vm initramfs: $*"; sync; poweroff -f; }
while read -r ko; do
  insmod "/modules/$ko" || fail "insmod $ko failed"
done </modules/order
# The host's / (readonly on the host side too), cached: nothing changes it during a run.
mount -t 9p -o ro,trans=virtio,version=9p2000.L,msize=512000,cache=loose root /lower ||
  fail "cannot mount the host's / over 9p"
mount -t tmpfs -o mode=0755 tmpfs /rw
mkdir -p /rw/upper /rw/work
mount -t overlay -o lowerdir=/lower,upperdir=/rw/upper,workdir=/rw/work overlay /newroot ||
  fail "cannot mount the overlay"
stage2=
for arg in $(cat /proc/cmdline); do
  case "$arg" in hybridge.stage2=*) stage2=${arg#hybridge.stage2=} ;; esac
done
[ -n "$stage2" ] || fail "no hybridge.stage2= on the kernel command line"
mount --move /proc /newroot/proc
mount --move /sys /newroot/sys
mount --move /dev /newroot/dev
exec switch_root /newroot /bin/bash "$stage2"
EOF
}

initramfs_modules() {
  # `modprobe --show-depends` lists a module's dependencies first, as insmod lines.
  local m
  for m in virtio_pci 9pnet_virtio 9p overlay; do
    modprobe -d "$ktree" -S "$kver" --show-depends "$m"
  done | awk '$1 == "insmod" && !seen[$2]++ { print $2 }'
}

ihash=$({ initramfs_init; initramfs_modules; cat "${BASH_SOURCE[0]}"; } | sha256sum | cut -c1-16)
initramfs=$ktree/initramfs-$ihash.cpio
if [ ! -f "$initramfs" ]; then
  say "building $initramfs"
  work=$(mktemp -d "$cache/.initramfs.XXXXXX")
  mkdir -p "$work/bin" "$work/modules"
  cp /bin/busybox "$work/bin/busybox"
  initramfs_init >"$work/init"
  chmod 0755 "$work/init"
  : >"$work/modules/order"
  while read -r ko; do
    [ -f "$ko" ] || die "module $ko missing from $ktree: remove it and run again"
    cp "$ko" "$work/modules/"
    basename "$ko" >>"$work/modules/order"
  done < <(initramfs_modules)
  (cd "$work" && find . -mindepth 1 | /bin/busybox cpio -o -H newc 2>/dev/null) >"$initramfs.tmp"
  mv "$initramfs.tmp" "$initramfs"
  rm -rf "$work"
  # Older initramfs images of this kernel are stale now.
  find "$ktree" -maxdepth 1 -name 'initramfs-*.cpio' ! -name "${initramfs##*/}" -delete
fi

if [ "$prepare" = 1 ]; then
  echo "vm: ready: $kernel, $initramfs" >&2
  exit 0
fi

# ---------------------------------------------------------------------------------------------
# No command: the VM test suite. Build on the host, then run the e2e test binary's vm:: tests
# in one guest boot, with the binaries the harness would otherwise build itself.

if [ "$have_cmd" = 0 ]; then
  cd "$repo"
  target_dir=${CARGO_TARGET_DIR:-}
  if [ -z "$target_dir" ]; then
    target_dir=$(cargo metadata --format-version 1 --no-deps | sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')
  fi
  [ -n "$target_dir" ] || die "cannot find cargo's target directory"
  echo "vm: building the e2e tests and the binaries on the host" >&2
  # The e2e test binary: the compiler-artifact message for target "e2e" names its executable.
  # Built as `cargo test --workspace` builds it (features unified over the workspace), so after
  # that command this is no build at all; `-p hybridge-tests` would build a second e2e.
  exe=$(cargo test --workspace --test e2e --no-run --message-format=json |
    grep '"name":"e2e"' | grep -o '"executable":"[^"]*"' | tail -n 1 | cut -d'"' -f4)
  if [ -z "$exe" ] || [ ! -x "$exe" ]; then
    die "cargo test --no-run did not report the e2e test executable"
  fi
  cargo build -p hybridge-cli -p hybridge-relay --bin hybridge --bin hybridge-relay
  bin_dir=$target_dir/debug
  out=$(mktemp)
  trap 'rm -f "$out"' EXIT
  status=0
  # The suite's own defaults: its key tests start Firefox, which takes minutes and a gigabyte
  # under emulation.
  [ "$timeout_given" = 1 ] || timeout_secs=2400
  [ "$memory_given" = 1 ] || memory=3072
  inner=(--env "HYBRIDGE_BIN_DIR=$bin_dir" --timeout "$timeout_secs" --memory "$memory")
  if [ -n "$logs_dir" ]; then inner+=(--logs "$logs_dir"); fi
  if [ "$verbose" = 1 ]; then inner+=(-v); fi
  for kv in "${envs[@]}"; do inner+=(--env "$kv"); done
  for dir in "${shares[@]}"; do inner+=(--share "$dir"); done
  # shellcheck disable=SC2016 # expanded by the guest's bash, from its arguments
  [ "${#filters[@]}" -gt 0 ] || filters=(vm::)
  "$0" "${inner[@]}" -- bash -c 'cd "$1" && exe=$2 && shift 2 && exec "$exe" --ignored --test-threads=1 "$@"' \
    vm-suite "$repo/tests" "$exe" "${filters[@]}" "${skips[@]}" |
    tee "$out" || status=$?
  # libtest's summary: "test result: ok. 2 passed; 0 failed; 0 ignored; ...".
  summary=$(grep -E '^test result: ' "$out" | tail -n 1 || true)
  passed=$(sed -n 's/.* \([0-9][0-9]*\) passed;.*/\1/p' <<<"$summary")
  failed=$(sed -n 's/.* \([0-9][0-9]*\) failed;.*/\1/p' <<<"$summary")
  if [ -z "$summary" ]; then
    echo "vm: the suite did not finish (exit status $status)" >&2
    echo "${passed:-0} passed, $((${failed:-0} + 1)) failed"
    exit 1
  fi
  echo "$passed passed, $failed failed"
  if [ "$passed" = 0 ] && [ "$failed" = 0 ]; then
    echo "vm: no test matched ${filters[*]}" >&2
    exit 1
  fi
  if [ "$failed" != 0 ] || [ "$status" != 0 ]; then exit 1; fi
  exit 0
fi

# ---------------------------------------------------------------------------------------------
# One command in the guest. The job directory is shared writable with the guest: it holds the
# command, its working directory and environment, and receives its stdout, stderr and status.

job=$(mktemp -d "${TMPDIR:-/tmp}/hybridge-vm.XXXXXX")
chmod 0700 "$job"
qemu_pid=
tail_pids=()

# shellcheck disable=SC2317 # called from the EXIT trap
cleanup() {
  if [ -n "$qemu_pid" ] && kill -0 "$qemu_pid" 2>/dev/null; then
    kill "$qemu_pid" 2>/dev/null || true
    wait "$qemu_pid" 2>/dev/null || true
  fi
  local p
  for p in "${tail_pids[@]}"; do kill "$p" 2>/dev/null || true; done
  if [ -n "$logs_dir" ]; then
    mkdir -p "$logs_dir"
    cp "$job"/console.log "$job"/logs/* "$logs_dir"/ 2>/dev/null || true
  fi
  rm -rf "$job"
}
trap cleanup EXIT
trap 'echo "vm: interrupted" >&2; exit 130' INT
trap 'echo "vm: terminated" >&2; exit 143' TERM

# /tmp and /run are fresh tmpfs in the guest: a checkout or working directory under them (a CI
# clone in /tmp, say) would vanish there, so it is shared like a --share DIR.
for dir in "$repo" "$PWD"; do
  case "$dir" in
  /tmp | /tmp/* | /run | /run/*)
    covered=0
    for s in "${shares[@]}"; do
      case "$dir/" in "$s"/*) covered=1 ;; esac
    done
    if [ "$covered" = 0 ]; then shares+=("$dir"); fi
    ;;
  esac
done

printf '%s\0' "${cmd[@]}" >"$job/cmd"
printf '%s' "$PWD" >"$job/cwd"
if [ ${#shares[@]} -gt 0 ]; then printf '%s\0' "${shares[@]}"; fi >"$job/shares"
printf '%s' "$moddir" >"$job/moddir"
# The environment CMD sees: a few general variables and the project's own, then --env.
{
  for name in PATH HOME USER LANG LC_ALL TERM TZ RUST_BACKTRACE RUST_LOG CI; do
    if [ -n "${!name+x}" ]; then printf 'export %s=%q\n' "$name" "${!name}"; fi
  done
  while IFS='=' read -r -d '' name value; do
    case "$name" in HYBRIDGE_*) printf 'export %s=%q\n' "$name" "$value" ;; esac
  done < <(env -0)
  for kv in "${envs[@]}"; do printf 'export %s=%q\n' "${kv%%=*}" "${kv#*=}"; done
} >"$job/env"
mkdir -p "$job/logs"
: >"$job/stdout"
: >"$job/stderr"
: >"$job/console.log"

# Hardware virtualisation only where it really works: a PVM /dev/kvm (kvm_pvm) runs only
# PVM-enlightened kernels, and a stock kernel hangs in it.
accel=tcg
cpu=max
if [ -w /dev/kvm ] && grep -qwE 'vmx|svm' /proc/cpuinfo && [ ! -d /sys/module/kvm_pvm ]; then
  accel=kvm
  cpu=host
fi
say "booting $kpkg under $accel"

# cryptomgr.notests: the kernel's crypto self-tests (ECDH and friends, run as bluetooth and the
# modules btvirt needs load) cost seconds under emulation; mitigations=off: a throwaway guest.
# shellcheck disable=SC2054 # the commas are QEMU's option syntax
qemu_args=(
  -machine q35,accel="$accel" -cpu "$cpu" -smp 2 -m "$memory"
  -nodefaults -no-user-config -display none -no-reboot -nic none
  -serial file:"$job/console.log"
  -kernel "$kernel" -initrd "$initramfs"
  -append "console=ttyS0 quiet loglevel=3 panic=-1 cryptomgr.notests mitigations=off hybridge.stage2=$here/guest.sh"
  -virtfs local,path=/,mount_tag=root,security_model=none,readonly=on,multidevs=remap
  -virtfs "local,path=$job,mount_tag=job,security_model=none"
)
i=0
for dir in "${shares[@]}"; do
  qemu_args+=(-virtfs "local,path=$dir,mount_tag=share$i,security_model=none,multidevs=remap")
  i=$((i + 1))
done

started=$(date +%s)
timeout --kill-after=5 "$timeout_secs" qemu-system-x86_64 "${qemu_args[@]}" </dev/null &
qemu_pid=$!
# Stream CMD's output as it is written; tail --pid reads what is left after QEMU exits.
tail -n +1 -f --pid="$qemu_pid" "$job/stdout" &
tail_pids+=($!)
tail -n +1 -f --pid="$qemu_pid" "$job/stderr" >&2 &
tail_pids+=($!)
if [ "$verbose" = 1 ]; then
  tail -n +1 -f --pid="$qemu_pid" "$job/console.log" | sed -u 's/^/vm console: /' >&2 &
  tail_pids+=($!)
fi
qemu_status=0
wait "$qemu_pid" || qemu_status=$?
qemu_pid=
for p in "${tail_pids[@]}"; do wait "$p" 2>/dev/null || true; done
tail_pids=()
say "guest ran for $(($(date +%s) - started)) s"

if [ -s "$job/status" ]; then
  status=$(cat "$job/status")
  exit "$status"
fi
timed_out=0
if [ "$qemu_status" = 124 ] || [ "$qemu_status" = 137 ]; then
  timed_out=1
  echo "vm: timed out after $timeout_secs s; the guest was stopped" >&2
else
  echo "vm: the guest stopped before the command finished (qemu exit status $qemu_status)" >&2
fi
if [ -s "$job/logs/setup.log" ]; then
  echo "vm: guest setup log:" >&2
  sed 's/^/vm setup: /' "$job/logs/setup.log" >&2
fi
echo "vm: last lines of the guest console:" >&2
tail -n 20 "$job/console.log" | sed 's/^/vm console: /' >&2
if [ "$timed_out" = 1 ]; then exit 124; fi
exit 125
