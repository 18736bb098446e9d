#!/usr/bin/env bash
# SPDX-License-Identifier: BSD-3-Clause
# qemount extract of an image named by URL (nginx on 127.0.0.1, and an
# NBD server that is slow and fails reads for a while: nbdkit's delay
# and error filters), through the helper VM: the tar holds the files
# that went in.
source ./tests/qemount-functions.sh
source "$top_srcdir/tests/remote-functions.sh"
requires_guest
requires curl
make_images mbr-only
convert_images mbr
mkdir "$tmp/www" "$tmp/x"
ln -s "$tmp/mbr.qcow2" "$tmp/www/mbr.qcow2"
nginx_start "$tmp/www"

qemount extract "$http/mbr.qcow2" --path /dir/sub -o "$tmp/sub.tar" ||
  fail "extract $http/mbr.qcow2 failed"
tar -xf "$tmp/sub.tar" -C "$tmp/x"
mkdir -p "$tmp/want/dir"
cp -a "$tmp/tree/dir/sub" "$tmp/want/dir/"
manifest "$tmp/want" > "$tmp/want.manifest"
manifest "$tmp/x" > "$tmp/got.manifest"
diff -u "$tmp/want.manifest" "$tmp/got.manifest" ||
  fail "extract --path /dir/sub over HTTP: the files differ"

# The whole filesystem from a slow NBD server (20 ms a read) that fails
# reads (EIO) until its first failure is logged: retried, never a short
# or wrong tar.
for f in delay error; do
  nbdkit --filter=$f null --dump-plugin >/dev/null 2>&1 || skip "nbdkit's $f filter is not installed"
done
touch "$tmp/failing"
nbdkit -f -r -U "$tmp/nbd.sock" --filter=delay --filter=error file "$tmp/mbr.qcow2" \
  rdelay=20ms error=EIO error-pread-rate=100% error-pread-file="$tmp/failing" \
  2>"$tmp/server.log" &
server_pid=$!
stop_server () { kill "$server_pid" 2>/dev/null; wait "$server_pid" 2>/dev/null || :; }
on_exit stop_server
remove_once_logged "$tmp/failing" "$tmp/server.log" "injecting EIO error into pread"
watcher=$!
for _ in $(seq 100); do [ -S "$tmp/nbd.sock" ] && break; sleep 0.05; done
qemount extract "nbd+unix:///?socket=$tmp/nbd.sock" -o "$tmp/all.tar" ||
  fail "extract from the failing NBD server failed"
wait "$watcher"
grep -q "injecting EIO error into pread" "$tmp/server.log" ||
  fail "the NBD server failed no read"
mkdir "$tmp/all"
tar -xf "$tmp/all.tar" -C "$tmp/all"
manifest "$tmp/all" | diff -u "$tmp/tree.manifest" - ||
  fail "extract from the failing NBD server: the files differ"

echo "PASS: qemount extract of an image by URL, and from a failing NBD server"
