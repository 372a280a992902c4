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
echo "systemd units verified"
