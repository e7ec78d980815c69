#!/usr/bin/env bash
# Debian packages the suites drive as real peers: Chromium (Uppy), tuspy, redis-server, and Ceph
# (a RADOS Gateway: the S3 server of the object-storage suites).
# Run before `npm test` so the README's test command works on a fresh machine: installs what is
# missing when run as root, otherwise says what to install (the suites that need it then fail
# with a message naming the package).
set -u
packages=(chromium python3-tuspy redis-server radosgw ceph-mon ceph-osd)
missing=()
for p in "${packages[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "installing test peers: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq && apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
else
  echo "the real-client and Redis suites need: apt-get install ${missing[*]}" >&2
fi
exit 0
