#!/usr/bin/env bash
# SPDX-License-Identifier: BSD-3-Clause
# What is not a regular file or a block device is refused as an image,
# at once and with a message naming it: a FIFO (whose open waited for a
# writer for ever), a directory and a character device, given to qemount
# info, mount, snapshot create and snapshot info, to the plugin, and as
# a backing file.  Every command runs under timeout, so that a hang
# fails the test rather than stalling it.
source ./tests/qemount-functions.sh
requires timeout
requires nbdkit
requires qemu-img

mkfifo "$tmp/fifo"
mkdir "$tmp/dir" "$tmp/mnt"

# refused STATUS FILE COMMAND...: COMMAND exits with STATUS and says
# that FILE is not a regular file or block device (qemount says only
# that).
refused ()
{
  local status=$1 file=$2
  shift 2
  [ "$1" != qemount ] || set -- env $QEMOUNT_ENV "$QEMOUNT" "${@:2}"
  expect "$status" "$file: not a regular file or block device" \
    timeout -k 5 60 "$@"
  [ "$1" = nbdkit ] || [ "$(wc -l < "$tmp/err")" = 1 ] ||
    { cat "$tmp/err" >&2; fail "$*: more than one message"; }
}

for f in "$tmp/fifo" "$tmp/dir" /dev/null; do
  refused 6 "$f" qemount info "$f"
  refused 6 "$f" qemount mount "$f" "$tmp/mnt"
  refused 1 "$f" qemount snapshot create "$f" "$tmp/out.qsnap"
  [ -z "$(ls "$tmp" | grep '^out\.qsnap')" ] ||
    fail "snapshot create of $f left a file"
  refused 1 "$f" qemount snapshot info "$f"
  refused 1 "$f" nbdkit -f -U - "$QEMOUNT_PLUGIN" file="$f" --run true
  qemu-img create -q -f qcow2 -u -F raw -b "$f" "$tmp/top.qcow2" 16M
  refused 6 "$f" qemount info --backing yes "$tmp/top.qcow2"
  echo "ok $f"
done
[ -z "$(ls -A "$tmp/mnt")" ] || fail "$tmp/mnt is not empty any more"
assert_clean "$tmp/mnt"
