#!/usr/bin/env bash
# SPDX-License-Identifier: BSD-3-Clause
# qemount mount through nbd-client, where the nbd kernel module gives
# /dev/nbdN: the attach step the machines with it use.  Mount, compare
# the files, check that list says nbd-client, umount, nothing left (the
# nbd device disconnected).  Elsewhere this SKIPs: the same stack minus
# nbd-client is covered by the nbdfuse tests.
source ./tests/qemount-functions.sh
[ -b /dev/nbd0 ] || skip "no /dev/nbd0: the nbd kernel module is not available"
requires nbd-client
setup_mount_test convert

for ext in img qcow2 hdd; do
  qemount mount "$tmp/mbr.$ext" "$mnt" || fail "$ext: mount failed"
  qemount list --json > "$tmp/list.json"
  jq -e '.[0].attach == "nbd-client" and (.[0].nbd | startswith("/dev/nbd"))' \
    "$tmp/list.json" >/dev/null || fail "$ext: not attached with nbd-client: $(cat "$tmp/list.json")"
  nbd=$(jq -r '.[0].nbd' "$tmp/list.json")
  manifest "$mnt" | diff -u "$tmp/tree.manifest" - || fail "$ext: the files differ"
  pids=$(mount_pids "$mnt")
  qemount umount "$mnt" || fail "$ext: umount failed"
  assert_clean "$mnt" $pids
  [ ! -e "/sys/block/${nbd#/dev/}/pid" ] || fail "$ext: $nbd is still connected"
done
echo "PASS: nbd-client attach for raw, qcow2 and ploop"
