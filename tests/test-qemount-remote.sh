#!/usr/bin/env bash
# SPDX-License-Identifier: BSD-3-Clause
# qemount on an image named by URL (nginx on 127.0.0.1): info, mount
# through the host kernel and mount --raw read it in place, and with
# --cache-dir fetch nothing the second time; a missing object is "no
# image" (3), a server that does not answer an error (1).
source ./tests/qemount-functions.sh
source "$top_srcdir/tests/remote-functions.sh"
requires_root
requires nbdkit
requires curl
make_images mbr-only
convert_images mbr
mkdir "$tmp/www" "$tmp/mnt"
mnt="$tmp/mnt"
ln -s "$tmp/mbr.qcow2" "$tmp/www/mbr.qcow2"
nginx_start "$tmp/www"
url="$http/mbr.qcow2"

qemount info --json "$url" > "$tmp/info.json" || fail "info $url failed"
[ "$(jq -r .format "$tmp/info.json")" = qcow2 ] || fail "info: not qcow2: $(cat "$tmp/info.json")"
jq -e '.partitions[] | select(.number == 5)' "$tmp/info.json" >/dev/null ||
  fail "info: no partition 5: $(cat "$tmp/info.json")"

qemount mount "$url" "$mnt" || fail "mount $url failed"
manifest "$mnt" > "$tmp/got.manifest"
pids=$(mount_pids "$mnt")
qemount list | grep -qF "$url" || fail "qemount list does not name $url"
diff -u "$tmp/tree.manifest" "$tmp/got.manifest" ||
  fail "mount $url: the files differ from what went in"
qemount umount "$mnt" || fail "umount failed"
assert_clean "$mnt" $pids

qemount mount --raw "$url" "$mnt" || fail "mount --raw $url failed"
cmp "$mnt/disk" "$tmp/mbr.img" || fail "mount --raw $url: DIR/disk differs"
pids=$(mount_pids "$mnt")
qemount umount "$mnt" || fail "umount --raw failed"
assert_clean "$mnt" $pids

# --cache-dir: what info and mount --raw (through nbdkit) fetched once
# is not fetched again.
get_bytes () { awk '$1 == "GET" { n += $4 } END { print n + 0 }' "$tmp/nginx/access.log"; }
cache_run ()
{
  qemount info "$url" --cache-dir "$tmp/cache" >/dev/null ||
    fail "info --cache-dir failed"
  qemount mount --raw --cache-dir "$tmp/cache" "$url" "$mnt" ||
    fail "mount --raw --cache-dir failed"
  cmp "$mnt/disk" "$tmp/mbr.img" || fail "mount --raw --cache-dir: DIR/disk differs"
  pids=$(mount_pids "$mnt")
  qemount umount "$mnt" || fail "umount --raw failed"
  assert_clean "$mnt" $pids
}
cache_run
before=$(get_bytes)
cache_run
[ "$(get_bytes)" = "$before" ] ||
  fail "--cache-dir: $(($(get_bytes) - before)) bytes fetched again"
expect 1 "cache directory /etc/passwd: not a directory" \
  qemount info "$url" --cache-dir /etc/passwd

expect 3 "$http/nope.qcow2: opening: HTTP status 404" qemount info "$http/nope.qcow2"
# A server that stops answering: --timeout bounds the wait (timeout(1)
# makes a hang a failure, not a stuck test).
kill -STOP "$nginx_pid"
expect 1 "$url: opening: timed out (no progress for 1 s)" timeout -s KILL 60 "$QEMOUNT" info "$url" --timeout 1
kill -CONT "$nginx_pid"
expect 2 "--timeout 0: must be a number of seconds, from 1 to 86400" \
  qemount info "$url" --timeout 0
nginx_stop
expect 1 "$url: opening: " qemount info "$url"

echo "PASS: qemount info and mount of an image by URL"
