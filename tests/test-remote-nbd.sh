#!/usr/bin/env bash
# SPDX-License-Identifier: BSD-3-Clause
# Images on an NBD server (nbdkit's file plugin on a unix socket, with 20
# ms of added latency per read): they decode exactly through
# file=nbd+unix://, in parallel over several connections; a server that
# stops answering fails reads after timeout=.
source ./tests/functions.sh
source "$top_srcdir/tests/remote-functions.sh"
requires nbdkit
requires nbdcopy
nbdkit --dump-plugin file >/dev/null 2>&1 || skip "nbdkit's file plugin is not installed"
nbdkit --filter=delay null --dump-plugin >/dev/null 2>&1 || skip "nbdkit's delay filter is not installed"

stop_server ()
{
  [ -n "${server_pid:-}" ] || return 0
  kill -CONT "$server_pid" 2>/dev/null || :
  kill "$server_pid" 2>/dev/null || :
}
on_exit stop_server

# serve IMAGE: nbdkit file on $tmp/server.sock, slowed down.
serve ()
{
  stop_server
  rm -f "$tmp/server.sock" "$tmp/server.pid"
  nbdkit -r -U "$tmp/server.sock" -P "$tmp/server.pid" --filter=delay \
    file "$1" rdelay=20ms 2>>"$tmp/server.log" ||
    { cat "$tmp/server.log" >&2; fail "nbdkit file did not start"; }
  for _ in $(seq 100); do
    [ -s "$tmp/server.pid" ] && [ -S "$tmp/server.sock" ] && break
    sleep 0.05
  done
  server_pid=$(cat "$tmp/server.pid")
}

url="nbd+unix:///?socket=$tmp/server.sock"
for image in src/mixed.raw qcow2/comp-zstd-c64k.qcow2 vhdx/qemu-dyn-b1m.vhdx \
             dmg/zlib.dmg vdi/vbox-dynamic.vdi; do
  serve "$IMAGES/$image"
  copy_matches_manifest "$image" file="$url" connections=4
done

# An export has no directory: a backing file is not looked for there.
serve "$IMAGES/qcow2-chain/top.qcow2"
expect_read_failure "chain" "an NBD export has no directory to look for it in" "$url"
qemount_read -b no "$url" >/dev/null 2>"$tmp/err" ||
  { cat "$tmp/err" >&2; fail "chain: backing=no refused"; }

# A stopped server (SIGSTOP): a read fails once timeout= passes with no
# progress, naming the URL; never a hang (a hang fails the test when
# timeout(1) kills nbdkit).
head -c 4M /dev/urandom > "$tmp/data.raw"
serve "$tmp/data.raw"
if timeout -s KILL 120 env $nbdkit_env nbdkit -f -U - -r "$QEMOUNT_PLUGIN" \
     --run "kill -STOP $server_pid; $nbd_read \"\$uri\" 4096 $((2 << 20)); s=\$?; kill -CONT $server_pid; exit \$s" \
     file="$url" timeout=1 2>"$tmp/err" </dev/null; then
  fail "stopped server: the read succeeded"
fi
kill -CONT "$server_pid"
grep -qF "$url: reading 262144 bytes at offset 2097152: timed out (no progress for 1 s)" "$tmp/err" ||
  { cat "$tmp/err" >&2; fail "stopped server: no timeout message"; }

# No server: an error naming the URL.
stop_server
expect_read_failure "no server" "nbd+unix:///?socket=$tmp/server.sock: " "$url"

echo "PASS: images over NBD with added latency"
