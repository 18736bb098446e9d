#!/usr/bin/env bash
# SPDX-License-Identifier: BSD-3-Clause
# Images on an HTTP server (nginx on 127.0.0.1): every test image and
# chain decodes exactly; a small read fetches little; 503s for a while
# are retried; a stopped server, a replaced object and backing files
# leaving the URL directory are errors naming the URL; a local image's
# backing file on the server is followed under backing=yes only.
source ./tests/functions.sh
source "$top_srcdir/tests/remote-functions.sh"
requires nbdkit
requires nbdcopy
requires curl
requires qemu-img

mkdir -p "$tmp/www"
ln -s "$IMAGES" "$tmp/www/images"
nginx_start "$tmp/www"

# Every image of the manifest through the image layer alone.  Refused:
# EWF (libewf reads files by name) and differencing VDIs (their parent
# is found by listing a directory).
count=0
while read -r image format expected; do
  case "$format $image" in
    ewf*)
      expect_read_failure "$image" "EWF images must be local files" \
        "$http/images/$image"
      continue ;;
    "vdi vdi-chain/"*)
      expect_read_failure "$image" "which is looked for in a local directory only" \
        "$http/images/$image"
      continue ;;
  esac
  qemount_read "$http/images/$image" >"$tmp/out" 2>"$tmp/err" ||
    { cat "$tmp/err" >&2; fail "$image: qemount-read over HTTP failed"; }
  cmp -s "$tmp/out" "$IMAGES/$expected" ||
    fail "$image ($format): over HTTP differs from $expected"
  count=$((count + 1))
done < <(images_manifest)
[ "$count" -gt 0 ] || fail "no images in the manifest"

# Chains and multi-file images through nbdkit and a parallel client
# (nbdcopy runs several requests at once: several connections).
for image in qcow2-chain/top.qcow2 ploop-chain/DiskDescriptor.xml \
             vmdk/twoGbMaxExtentSparse.vmdk src/mixed.raw; do
  copy_matches_manifest "$image" file="$http/images/$image" connections=3
done

# Redirects are followed once, at open.
qemount_read "$http/redirect.qcow2" >"$tmp/out" 2>"$tmp/err" ||
  { cat "$tmp/err" >&2; fail "redirect: not followed"; }
cmp -s "$tmp/out" "$IMAGES/qcow2/v3-c64k.qcow2.expected.raw" || fail "redirect: data differs"
n=$(grep -c ' /redirect.qcow2 ' "$tmp/nginx/access.log")
[ "$n" = 1 ] || fail "redirect: asked $n times, not once"

# 1 MiB from the middle of a 1 GiB image moves a few blocks, not the
# image.
truncate -s 1G "$tmp/www/large.raw"
qemount_nbdkit -r --run "$nbd_read \"\$uri\" $((1 << 20)) $((512 << 20))" -- \
  file="$http/large.raw" 2>"$tmp/err" </dev/null ||
  { cat "$tmp/err" >&2; fail "large: reading 1 MiB failed"; }
bytes=$(nginx_bytes /large.raw)
echo "1 MiB of a 1 GiB remote image: $bytes bytes fetched"
[ "$bytes" -le $((3 << 20)) ] || fail "large: $bytes bytes fetched for a 1 MiB read"

# A sequential reader (1 MiB reads) gets several 256 KiB blocks per
# request: fewer than half the 32 requests of one block each.
head -c 8M /dev/urandom > "$tmp/www/seq.raw"
qemount_read "$http/seq.raw" 2>"$tmp/err" | cmp -s - "$tmp/www/seq.raw" ||
  { cat "$tmp/err" >&2; fail "sequential: data differs"; }
n=$(grep -c '^GET /seq.raw ' "$tmp/nginx/access.log")
echo "8 MiB read sequentially: $n requests"
[ "$n" -lt 16 ] || fail "sequential: $n requests for 8 MiB, no readahead"

# remote_fails WHAT MESSAGE COMMAND: with the image open (a 4 MiB file
# it has read the first and last blocks of), COMMAND (run by sh) fails a
# read with an error naming the URL.
head -c 4M /dev/urandom > "$tmp/www/data.raw"
remote_fails ()
{
  local what=$1 message=$2
  if qemount_nbdkit -r --run "$3" -- file="$http/data.raw" timeout=1 \
       2>"$tmp/err" </dev/null; then
    fail "$what: the read succeeded"
  fi
  grep -qF -- "$http/data.raw: $message" "$tmp/err" ||
    { cat "$tmp/err" >&2; fail "$what: no '$message' in the error"; }
}

# A stopped server: an error once the timeout passes, not a hang.
remote_fails "stopped server" \
  "reading 262144 bytes at offset 2097152: timed out (no progress for 1 s)" \
  "kill -STOP $nginx_pid; $nbd_read \"\$uri\" 4096 $((2 << 20)); s=\$?; kill -CONT $nginx_pid; exit \$s"

# The object replaced while it is served: reads fail rather than mix two
# versions.
head -c 4M /dev/urandom > "$tmp/www/data.new"
touch -d '2001-01-01' "$tmp/www/data.new"
remote_fails "replaced object" "the object changed after it was opened" \
  "mv $tmp/www/data.new $tmp/www/data.raw; $nbd_read \"\$uri\" 4096 $((2 << 20))"

# A server gone away: the read fails (after the retries).
remote_fails "server gone" "reading 262144 bytes at offset 1048576: " \
  "kill $nginx_pid; $nbd_read \"\$uri\" 4096 $((1 << 20))"
wait "$nginx_pid" 2>/dev/null || :
nginx_pid=
nginx_start "$tmp/www"

# Backing files of a remote image: the same URL directory only, unless
# backing=yes; never a local path or another server by default.
qemu-img create -q -f qcow2 "$tmp/www/base.qcow2" 4M
qemu-img create -q -f qcow2 -F qcow2 -b "$tmp/www/base.qcow2" "$tmp/www/abs.qcow2"
expect_read_failure "local backing" \
  "$http/abs.qcow2: backing file '$tmp/www/base.qcow2' is a local path, and the image is remote; use backing=yes" \
  "$http/abs.qcow2"
qemount_read -b yes "$http/abs.qcow2" >/dev/null 2>"$tmp/err" ||
  { cat "$tmp/err" >&2; fail "local backing: refused with backing=yes"; }
qemu-img create -q -f qcow2 -F qcow2 -b "http://127.0.0.2:1/base.qcow2" -u "$tmp/www/other.qcow2" 4M
expect_read_failure "another host" \
  "backing file 'http://127.0.0.2:1/base.qcow2' is outside the image's URL directory $http/" \
  "$http/other.qcow2"
mkdir -p "$tmp/www/sub"
qemu-img create -q -f qcow2 -F qcow2 -b "../base.qcow2" -u "$tmp/www/sub/up.qcow2" 4M
expect_read_failure "parent directory" \
  "backing file '../base.qcow2' is outside the image's URL directory $http/sub/" \
  "$http/sub/up.qcow2"
qemu-img create -q -f qcow2 -F qcow2 -b "%2e%2e%2fbase.qcow2" -u "$tmp/www/sub/enc.qcow2" 4M
expect_read_failure "encoded parent directory" "sub/%252e%252e%252fbase.qcow2" \
  "$http/sub/enc.qcow2"
qemount_read -b yes "$http/sub/up.qcow2" >/dev/null 2>"$tmp/err" ||
  { cat "$tmp/err" >&2; fail "parent directory: refused with backing=yes"; }

# A local image whose backing file is on the server: followed only with
# backing=yes (the server is the image's choice, not the user's).
qemu-img create -q -f qcow2 -F qcow2 -b "$http/base.qcow2" -u "$tmp/local-top.qcow2" 4M
expect_read_failure "local image, remote backing" \
  "$tmp/local-top.qcow2: backing file '$http/base.qcow2' is not a local file; use backing=yes to follow it" \
  "$tmp/local-top.qcow2"
qemu-img create -q -f raw "$tmp/base.raw" 4M
printf 'remote base' | dd of="$tmp/base.raw" bs=1 seek=4096 conv=notrunc status=none
qemu-img convert -f raw -O qcow2 "$tmp/base.raw" "$tmp/www/base.qcow2"
qemount_read -b yes "$tmp/local-top.qcow2" > "$tmp/local-top.raw" 2>"$tmp/err" ||
  { cat "$tmp/err" >&2; fail "local image, remote backing: refused with backing=yes"; }
cmp -s "$tmp/local-top.raw" "$tmp/base.raw" ||
  fail "local image, remote backing: the data differs from the base's"

# A server answering 503 for a while (until the watcher below sees the
# first one logged): the requests are sent again, and the data is right.
nginx_stop
nginx_start "$tmp/www" "if (-f $tmp/failing) { return 503; }"
touch "$tmp/failing"
remove_once_logged "$tmp/failing" "$tmp/nginx/access.log" " 503 "
watcher=$!
qemount_read "$http/base.qcow2" > "$tmp/flaky.raw" 2>"$tmp/err" ||
  { cat "$tmp/err" >&2; fail "503 for a while: the read failed"; }
wait "$watcher"
grep -q " 503 " "$tmp/nginx/access.log" || fail "503 for a while: nginx answered no 503"
cmp -s "$tmp/flaky.raw" "$tmp/base.raw" || fail "503 for a while: the data differs"

# Messages never show a user, password or (pre-signed) query of the URL.
hostport=${http#http://}
expect_read_failure "credentials" "http://$hostport/nope.qcow2: opening: HTTP status 404" \
  "http://user:secret@$hostport/nope.qcow2?X-Amz-Signature=token"
! grep -qE 'secret|token' "$tmp/err" || { cat "$tmp/err" >&2; fail "credentials in a message"; }

echo "PASS: $count images over HTTP, chains, bounded fetches, failures"
