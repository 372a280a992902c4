#!/usr/bin/env bash
# Verifies the unit files with systemd-analyze, pointing ExecStart at a built binary (the
# installed path /usr/local/bin may not exist on the machine that verifies).
# usage: systemd/verify.sh PATH/TO/training-collector
set -euo pipefail
bin=$(realpath "$1")
here=$(dirname "$0")
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
for u in training-collector.service training-collector-export.service training-collector-export.timer; do
  sed "s#/usr/local/bin/training-collector#$bin#g" "$here/$u" > "$tmp/$u"
done
out=$(SYSTEMD_LOG_LEVEL=warning systemd-analyze verify "$tmp"/*.service "$tmp"/*.timer 2>&1) || { echo "$out"; exit 1; }
# verify exits 0 on some problems it only prints; treat any line about our units as failure.
if echo "$out" | grep -E "training-collector" ; then
  echo "systemd-analyze verify reported problems"; exit 1
fi
# The export unit works in the daemon's data dir: as the same user, with the same umask (so
# the files either makes are the other's to use) and write access to it; the daemon also
# writes the spool the README's install steps make.
for key in User Group UMask; do
  a=$(grep "^$key=" "$here/training-collector.service" || true)
  b=$(grep "^$key=" "$here/training-collector-export.service" || true)
  if [ -z "$a" ] || [ "$a" != "$b" ]; then
    echo "training-collector-export.service: '$b' where the daemon's unit has '$a'"; exit 1
  fi
done
for pair in "training-collector.service /var/lib/training-collector" \
            "training-collector.service /var/spool/training-collector" \
            "training-collector-export.service /var/lib/training-collector"; do
  set -- $pair
  if ! grep -Eq "^ReadWritePaths=(.* )?$2( |$)" "$here/$1"; then
    echo "$1: no write access to $2"; exit 1
  fi
done
echo "systemd units verified"
