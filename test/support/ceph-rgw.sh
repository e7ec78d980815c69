#!/usr/bin/env bash
# A real single-node S3 server for the tests: Ceph RADOS Gateway on 127.0.0.1, with one ceph-mon,
# one ceph-osd (memstore: objects live in memory) and one radosgw, all state under one directory.
#
# Debian 12 packages (Ceph 16.2, pacific), installed as root with:
#   apt-get install -y radosgw ceph-mon ceph-osd
# Their dependencies ceph-base (monmaptool) and ceph-common (ceph, radosgw-admin, python3) come
# along; --no-install-recommends is enough (no ceph-mgr, ceph-mds or ceph-fuse is used).
#
# Usage:
#   ceph-rgw.sh start DIR   starts the three daemons with all their state in DIR (config, mon/osd
#                           data, pid files, admin sockets, logs), creates an S3 user with fixed
#                           keys, waits until the gateway answers HTTP and prints ONE JSON line:
#                           {"endpoint":"http://127.0.0.1:PORT","accessKeyId":"tussitest",
#                            "secretAccessKey":"tussitestsecret","region":"us-east-1"}
#                           Everything else goes to stderr or to DIR/log. Takes about 5 s; fails
#                           after CEPH_RGW_START_TIMEOUT seconds (60 by default), stopping what it
#                           started. Refuses a DIR whose daemons still run.
#   ceph-rgw.sh stop DIR    SIGTERM to the daemons of DIR by their pid files (gateway, OSD, mon, one
#                           after the other), SIGKILL to one still alive 5 s later. Exits 0 even if
#                           nothing runs. DIR itself is left for the caller to remove.
#
# The mon and gateway ports are picked free, the OSD takes free ones from 6800-7300 itself, so
# several clusters in different directories can run at once. Only 127.0.0.1 is bound. Every
# command gets `-c DIR/ceph.conf` and every path is set under DIR: /etc/ceph and /var/lib/ceph are
# never read or written.
#
# What the config below has to say (each one costs a failing start when missing):
#   - auth ... required = none and every ms_*_mode = crc: otherwise radosgw loops on
#     "auth request returned -13";
#   - public addr = cluster addr = 127.0.0.1: otherwise the OSD binds 0.0.0.0;
#   - osd pool default size = 1 with mon allow pool size one = true, and small pg counts: one OSD;
#   - paxos propose interval = 0.1: each of the gateway's 7 pools is one osdmap change, proposed
#     once a second by default (start-up 15 s instead of 5 s, a first bucket 2 s instead of 0.4 s).
set -euo pipefail

ACCESS_KEY=tussitest
SECRET_KEY=tussitestsecret
REGION=us-east-1

log() { printf 'ceph-rgw: %s\n' "$*" >&2; }

usage() {
  echo "usage: $0 start|stop DIR" >&2
  exit 2
}

[ $# -eq 2 ] || usage
cmd=$1
dir=$2

# The pid of daemon NAME of DIR from its pid file, only if that process is still one of ours (its
# command line names DIR/ceph.conf: a recycled pid is left alone); nothing otherwise.
pid_of() {
  local f=$dir/run/$1.pid pid cmdline
  [ -f "$f" ] || return 0
  pid=$(tr -dc '0-9' 2>/dev/null <"$f" || true)
  [ -n "$pid" ] || return 0
  cmdline=$(tr '\0' ' ' 2>/dev/null <"/proc/$pid/cmdline" || true)
  if [[ $cmdline == *"$dir/ceph.conf"* ]]; then echo "$pid"; fi
}

# the live daemons of DIR
daemon_pids() {
  pid_of client.rgw.a
  pid_of osd.0
  pid_of mon.a
}

# SIGTERM to daemon NAME, SIGKILL if it is still alive 5 s later
stop_one() {
  local pid
  pid=$(pid_of "$1")
  [ -n "$pid" ] || return 0
  kill -TERM "$pid" 2>/dev/null || true
  for _ in $(seq 1 50); do
    [ -n "$(pid_of "$1")" ] || return 0
    sleep 0.1
  done
  log "$1 (pid $pid) still alive 5 s after SIGTERM: SIGKILL"
  kill -KILL "$pid" 2>/dev/null || true
  for _ in $(seq 1 20); do
    [ -n "$(pid_of "$1")" ] || return 0
    sleep 0.1
  done
}

# one after the other: the OSD says goodbye to a live mon (else it waits 5 s for a dead one)
do_stop() {
  [ -d "$dir/run" ] || return 0
  stop_one client.rgw.a
  stop_one osd.0
  stop_one mon.a
}

if [ "$cmd" = stop ]; then
  if [ -d "$dir" ]; then dir=$(cd "$dir" && pwd -P); fi
  do_stop
  exit 0
fi
[ "$cmd" = start ] || usage

for bin in ceph-mon ceph-osd radosgw radosgw-admin ceph monmaptool python3; do
  if ! command -v "$bin" >/dev/null 2>&1; then
    log "$bin not found: apt-get install -y radosgw ceph-mon ceph-osd"
    exit 1
  fi
done

mkdir -p "$dir"
dir=$(cd "$dir" && pwd -P)
conf=$dir/ceph.conf
if [ -n "$(daemon_pids)" ]; then
  log "a cluster is already running in $dir: run '$0 stop $dir' first"
  exit 1
fi
# a previous run's state in this directory is dropped (only what this script creates)
rm -rf "$dir/mon" "$dir/osd" "$dir/rgw" "$dir/run" "$dir/log" "$dir/crash" "$dir/monmap" "$conf"
mkdir -p "$dir/mon" "$dir/osd" "$dir/rgw" "$dir/run" "$dir/log" "$dir/crash"

timeout_s=${CEPH_RGW_START_TIMEOUT:-60}
deadline=$((SECONDS + timeout_s))
started_ns=$(date +%s%N)
# seconds since the start, to the tenth
elapsed() {
  local ms=$((($(date +%s%N) - started_ns) / 1000000))
  printf '%d.%d' $((ms / 1000)) $((ms % 1000 / 100))
}
# seconds left before the deadline (at least 1, for `timeout`)
left() {
  local n=$((deadline - SECONDS))
  [ "$n" -ge 1 ] || n=1
  echo "$n"
}

fail() {
  log "start failed: $*"
  local f
  for f in "$dir"/log/*.log; do
    [ -s "$f" ] || continue
    echo "---- last lines of ${f#"$dir"/} ----" >&2
    tail -n 15 "$f" >&2 || true
  done
  do_stop
  exit 1
}
trap 'fail "interrupted"' INT TERM
trap 'fail "unexpected error at line $LINENO"' ERR

read -r mon_port rgw_port < <(python3 -c '
import socket
socks = [socket.socket() for _ in range(2)]
for s in socks:
    s.bind(("127.0.0.1", 0))
print(*[s.getsockname()[1] for s in socks])
') || fail "could not pick free ports"
fsid=$(python3 -c 'import uuid; print(uuid.uuid4())')
osd_uuid=$(python3 -c 'import uuid; print(uuid.uuid4())')

cat >"$conf" <<EOF
[global]
fsid = $fsid
mon host = v2:127.0.0.1:$mon_port
public addr = 127.0.0.1
cluster addr = 127.0.0.1
ms bind ipv4 = true
ms bind ipv6 = false
ms bind msgr1 = false
ms bind msgr2 = true

auth cluster required = none
auth service required = none
auth client required = none
ms cluster mode = crc
ms service mode = crc
ms client mode = crc
ms mon cluster mode = crc
ms mon service mode = crc
ms mon client mode = crc

keyring = $dir/keyring
admin socket = $dir/run/\$cluster-\$name.asok
pid file = $dir/run/\$name.pid
run dir = $dir/run
crash dir = $dir/crash
log file = $dir/log/\$name.log
log to stderr = false
err to stderr = false
mon cluster log file = $dir/log/\$cluster.\$channel.log
mon data = $dir/mon
osd data = $dir/osd
mgr data = $dir/mgr
rgw data = $dir/rgw

osd objectstore = memstore
# memstore is allocated as objects are written, up to this; deleted objects are freed by the
# gateway's garbage collection, which by default waits two hours: below, it runs every second.
memstore device bytes = 6442450944
osd pool default size = 1
osd pool default min size = 1
osd pool default pg num = 8
osd pool default pgp num = 8
osd pool default pg autoscale mode = off
mon allow pool size one = true
mon warn on pool no redundancy = false
mon max pg per osd = 1000
mon data avail warn = 1
mon data avail crit = 0
osd crush chooseleaf type = 0
paxos propose interval = 0.1

[client.admin]
admin socket =

[client.rgw.a]
rgw frontends = beast endpoint=127.0.0.1:$rgw_port
rgw gc obj min wait = 0
rgw gc processor period = 1
rgw gc processor max time = 1
rgw init timeout = $timeout_s
rgw enable usage log = false
EOF

log "mon on 127.0.0.1:$mon_port, gateway on 127.0.0.1:$rgw_port, state in $dir"

# a command bounded by the deadline, stdin from /dev/null and its output to DIR/log/setup.log (a
# daemon keeps no pipe of the caller open after it forks away)
quiet() { timeout --kill-after=2 "$(left)" "$@" </dev/null >>"$dir/log/setup.log" 2>&1; }
step() { log "$(elapsed) s: $*"; }

quiet monmaptool --create --clobber --enable-all-features --fsid "$fsid" \
  --addv a "[v2:127.0.0.1:$mon_port]" "$dir/monmap" || fail "monmaptool"
quiet ceph-mon -c "$conf" -i a --mkfs --monmap "$dir/monmap" || fail "ceph-mon --mkfs"
# ceph-mon and ceph-osd daemonize once they are up, their pid file written
quiet ceph-mon -c "$conf" -i a || fail "ceph-mon did not start"
step "ceph-mon started"

osd_id=$(timeout --kill-after=2 "$(left)" ceph -c "$conf" --connect-timeout "$(left)" \
  osd new "$osd_uuid" 2>>"$dir/log/setup.log") || fail "ceph osd new (is the mon up?)"
[ "$osd_id" = 0 ] || fail "unexpected osd id '$osd_id'"
quiet ceph-osd -c "$conf" -i 0 --mkfs --osd-uuid "$osd_uuid" || fail "ceph-osd --mkfs"
quiet ceph-osd -c "$conf" -i 0 || fail "ceph-osd did not start"
osd_up() {
  local stat
  stat=$(timeout 10 ceph -c "$conf" --connect-timeout 5 osd stat -f json 2>>"$dir/log/setup.log" || true)
  [[ $stat == *'"num_up_osds":1'* ]]
}
until osd_up; do
  [ "$SECONDS" -lt "$deadline" ] || fail "the OSD is not up after ${timeout_s} s"
  [ -n "$(pid_of osd.0)" ] || fail "ceph-osd exited"
  sleep 0.3
done
step "ceph-osd up"

# creates the gateway's pools and the user before the gateway runs (no race on the default zone)
quiet radosgw-admin -c "$conf" user create --uid=tussitest --display-name="tussi tests" \
  --access-key="$ACCESS_KEY" --secret-key="$SECRET_KEY" || fail "radosgw-admin user create"
step "S3 user created"

# radosgw forks away before it writes its pid file (a slow child is taken for a dead one): it runs
# in the foreground of a new session instead, and its pid file is this one
setsid radosgw -f -c "$conf" -n client.rgw.a </dev/null >>"$dir/log/setup.log" 2>&1 &
rgw_pid=$!
echo "$rgw_pid" >"$dir/run/client.rgw.a.pid"
# still running: neither gone nor a zombie (it is this shell's child until the script exits)
rgw_alive() {
  local _pid _comm state
  read -r _pid _comm state _ 2>/dev/null <"/proc/$rgw_pid/stat" || return 1
  [ "$state" != Z ]
}
# answers HTTP: an anonymous GET / gets a status line back
# shellcheck disable=SC2016 # $1 and $line are the inner shell's
until timeout 3 bash -c '
  exec 3<>"/dev/tcp/127.0.0.1/$1" || exit 1
  printf "GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n" >&3
  IFS= read -r line <&3 && [[ $line == HTTP/1.1\ * ]] && cat <&3 >/dev/null' _ "$rgw_port" 2>/dev/null; do
  [ "$SECONDS" -lt "$deadline" ] || fail "the gateway does not answer on 127.0.0.1:$rgw_port after ${timeout_s} s"
  rgw_alive || fail "radosgw exited"
  sleep 0.2
done
trap - INT TERM ERR
step "gateway answers on 127.0.0.1:$rgw_port"

printf '{"endpoint":"http://127.0.0.1:%s","accessKeyId":"%s","secretAccessKey":"%s","region":"%s"}\n' \
  "$rgw_port" "$ACCESS_KEY" "$SECRET_KEY" "$REGION"
