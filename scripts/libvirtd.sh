#!/usr/bin/env bash
# A libvirtd the project configures itself, private to one state directory, for real QEMU guests.
#
# Usage: scripts/libvirtd.sh install|start|stop|status|uri DIR
#   install  the Debian packages (QEMU, qemu-img, libvirtd, genisoimage for config drives), only when missing
#   start    start the daemon for DIR unless it already answers; prints its URI
#   stop     stop the daemon for DIR and every guest it still runs
#   uri      the libvirt URI of DIR's daemon: qemu:///system?socket=DIR/run/libvirt-sock
#
# A privileged libvirtd reads fixed paths (/etc/libvirt, /run/libvirt, /var/lib/libvirt, ...), so it
# runs in a private mount namespace where DIR's own directories are bound over those paths: its
# config, socket, domain definitions and logs all live in DIR, and two clouds on one machine never
# share a daemon. qemu.conf (as measured in shared/libvirt-on-these-machines.md): guests run as
# root (with the default qemu user, defineXML re-probes for ~48 s), stdio_handler=file (no virtlogd),
# no relabelling of the shared kernel and ramdisk. The daemon's parent is a small reaper
# (PR_SET_CHILD_SUBREAPER): QEMU processes are reparented to it and reaped at once, which brings
# destroy() from 1-2 s (PID 1 here reaps slowly) down to ~0.2 s.
set -euo pipefail
command="${1:-}"
dir="${2:-}"
[ -n "$command" ] && [ -n "$dir" ] || [ "$command" = install ] || {
  echo "usage: $0 install|start|stop|status|uri DIR" >&2; exit 2; }
sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"

install_packages() {
  local want=(qemu-system-x86 qemu-utils libvirt-daemon genisoimage) missing=() p
  for p in "${want[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  echo "installing Debian packages: ${missing[*]}"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

if [ "$command" = install ]; then install_packages; exit 0; fi

mkdir -p "$dir"
dir="$(cd "$dir" && pwd)"
sock="$dir/run/libvirt-sock"
pidfile="$dir/reaper.pid"
uri="qemu:///system?socket=$sock"

answers() {  # the daemon is up when its socket accepts a connection
  [ -S "$sock" ] && python3 -c 'import socket,sys; s=socket.socket(socket.AF_UNIX); s.settimeout(2); s.connect(sys.argv[1])' "$sock" 2>/dev/null
}

running_pid() {
  [ -f "$pidfile" ] || return 1
  local pid; pid="$(cat "$pidfile")"
  kill -0 "$pid" 2>/dev/null && grep -q /usr/sbin/libvirtd "/proc/$pid/cmdline" 2>/dev/null && echo "$pid"
}

case "$command" in
  uri) echo "$uri" ;;
  status)
    if answers; then echo "libvirtd for $dir is running: $uri"; else echo "libvirtd for $dir is not running"; exit 1; fi ;;
  start)
    if answers; then echo "$uri"; exit 0; fi
    install_packages
    # libvirtd refuses to start without the user its default qemu.conf names.
    getent group libvirt-qemu >/dev/null || $sudo groupadd --system libvirt-qemu
    getent passwd libvirt-qemu >/dev/null || $sudo useradd --system --no-create-home --home-dir /var/lib/libvirt \
      --shell /usr/sbin/nologin -g libvirt-qemu libvirt-qemu
    mkdir -p "$dir"/{etc/qemu,run,lib,cache,log}
    cat > "$dir/etc/libvirtd.conf" <<EOF
# written by scripts/libvirtd.sh; only root reaches the socket (it lives in $dir/run)
unix_sock_rw_perms = "0700"
unix_sock_ro_perms = "0700"
auth_unix_rw = "none"
auth_unix_ro = "none"
log_outputs = "3:file:/var/log/libvirt/libvirtd.log"
EOF
    cat > "$dir/etc/qemu.conf" <<'EOF'
# written by scripts/libvirtd.sh
user = "root"
group = "root"
stdio_handler = "file"
dynamic_ownership = 0
remember_owner = 0
security_driver = "none"
EOF
    for p in /etc/libvirt /run/libvirt /var/lib/libvirt /var/cache/libvirt /var/log/libvirt; do $sudo mkdir -p "$p"; done
    rm -f "$sock" "$dir/run/libvirtd.pid"
    # The reaper: parent of libvirtd and, as child subreaper, of every QEMU it daemonizes.
    reaper='
import ctypes, os, signal, sys
ctypes.CDLL(None, use_errno=True).prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER
daemon = os.fork()
if daemon == 0:
    os.execvp(sys.argv[1], sys.argv[1:])
def forward(signum, _frame):
    try:
        os.kill(daemon, signum)
    except ProcessLookupError:
        pass
signal.signal(signal.SIGTERM, forward)
while True:
    try:
        pid, _ = os.wait()
    except ChildProcessError:
        break
    except InterruptedError:
        continue
'
    $sudo setsid unshare --mount --propagation private -- sh -c '
      d="$1"; shift
      mount --bind "$d/etc" /etc/libvirt
      mount --bind "$d/run" /run/libvirt
      mount --bind "$d/lib" /var/lib/libvirt
      mount --bind "$d/cache" /var/cache/libvirt
      mount --bind "$d/log" /var/log/libvirt
      echo $$ > "$d/reaper.pid"
      exec python3 -c "$@"
    ' sh "$dir" "$reaper" /usr/sbin/libvirtd --config /etc/libvirt/libvirtd.conf --pid-file /run/libvirt/libvirtd.pid \
      </dev/null >>"$dir/log/reaper.log" 2>&1 &
    for _ in $(seq 1 100); do
      answers && { echo "$uri"; exit 0; }
      sleep 0.1
    done
    echo "libvirtd for $dir did not come up; see $dir/log/libvirtd.log and $dir/log/reaper.log" >&2
    exit 1 ;;
  stop)
    pid="$(running_pid || true)"
    # Guests outlive a stopped libvirtd by design; stop means the cloud is gone, so end them too.
    guests=()
    for f in "$dir"/run/qemu/*.pid; do
      [ "$(basename "$f")" = driver.pid ] && continue
      qpid="$(cat "$f" 2>/dev/null)" || continue
      grep -q qemu "/proc/$qpid/cmdline" 2>/dev/null && guests+=("$qpid")
    done
    [ -n "$pid" ] && $sudo kill -TERM "$pid" 2>/dev/null || true
    [ ${#guests[@]} -gt 0 ] && $sudo kill -TERM "${guests[@]}" 2>/dev/null || true
    for _ in $(seq 1 50); do
      [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null || break
      sleep 0.1
    done
    [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null && $sudo kill -KILL "$pid" 2>/dev/null || true
    # the network bridges of this daemon's guests (eventsvm/virt/bridges.py: their alias names
    # this socket) go with them, once the guests' taps have left them; under that module's lock
    for _ in $(seq 1 50); do
      alive=0
      for g in "${guests[@]}"; do kill -0 "$g" 2>/dev/null && alive=1; done
      [ "$alive" = 0 ] && break
      sleep 0.1
    done
    (
      flock 9
      for b in /sys/class/net/brq*; do
        [ -d "$b/brif" ] || continue
        case "$(cat "$b/ifalias" 2>/dev/null)" in "eventsvm network "*" of $sock") $sudo ip link del "${b##*/}" ;; esac
      done
    ) 9>>"${TMPDIR:-/tmp}/eventsvm-bridges.lock" || true
    rm -f "$pidfile" "$sock"
    echo "libvirtd for $dir stopped" ;;
  *) echo "usage: $0 install|start|stop|status|uri DIR" >&2; exit 2 ;;
esac
