#!/usr/bin/env bash
# SPDX-License-Identifier: BSD-3-Clause
# Images on an NBD server (nbdkit's file plugin on a unix socket, with 20
# ms of added latency per read): they decode exactly through
# file=nbd+unix://, in parallel over several connections, also when the
# server fails reads for a while (nbdkit's error filter: retried); a server
# that stops answering fails reads after timeout=.
source ./tests/functions.sh
source "$top_srcdir/tests/remote-functions.sh"
requires nbdkit
requires nbdcopy
nbdkit --dump-plugin file >/dev/null 2>&1 || skip "nbdkit's file plugin is not installed"
for f in delay error; do
  nbdkit --filter=$f null --dump-plugin >/dev/null 2>&1 || skip "nbdkit's $f filter is not installed"
done

stop_server ()
{
  [ -n "${server_pid:-}" ] || return 0
  kill -CONT "$server_pid" 2>/dev/null || :
  kill "$server_pid" 2>/dev/null || :
  # Gone before the next one starts: nbdkit removes its socket on exit.
  wait "$server_pid" 2>/dev/null || :
  server_pid=
}
on_exit stop_server

# serve IMAGE [FILTER ARGS...]: nbdkit file on $tmp/server.sock, slowed
# down (and with the error filter, if given its arguments).
serve ()
{
  local image=$1 filters=(--filter=delay)
  shift
  [ $# = 0 ] || filters+=(--filter=error)
  stop_server
  rm -f "$tmp/server.sock"
  # In the foreground, as our child: a daemon's messages go to syslog.
  nbdkit -f -r -U "$tmp/server.sock" "${filters[@]}" \
    file "$image" rdelay=20ms "$@" 2>>"$tmp/server.log" &
  server_pid=$!
  for _ in $(seq 100); do
    [ -S "$tmp/server.sock" ] && return 0
    kill -0 "$server_pid" 2>/dev/null || break
    sleep 0.05
  done
  cat "$tmp/server.log" >&2
  fail "nbdkit file did not start"
}

url="nbd+unix:///?socket=$tmp/server.sock"
for image in src/mixed.raw qcow2/comp-zstd-c64k.qcow2 vhdx/qemu-dyn-b1m.vhdx \
             dmg/zlib.dmg vdi/vbox-dynamic.vdi; do
  serve "$IMAGES/$image"
  copy_matches_manifest "$image" file="$url" connections=4
done

# A server that fails reads for a while (nbdkit's error filter, EIO
# while $tmp/failing exists, which goes once the first failure is
# logged): each is tried again, and the images still decode exactly.
# One that fails every read: the error, after the retries, names the
# URL and what the server said.
for image in src/mixed.raw qcow2/comp-zstd-c64k.qcow2; do
  : > "$tmp/server.log"
  touch "$tmp/failing"
  serve "$IMAGES/$image" error=EIO error-pread-rate=100% error-pread-file="$tmp/failing"
  remove_once_logged "$tmp/failing" "$tmp/server.log" "injecting EIO error into pread"
  watcher=$!
  copy_matches_manifest "$image" file="$url" connections=4
  wait "$watcher"
  grep -q "injecting EIO error into pread" "$tmp/server.log" ||
    fail "$image: the flaky server failed no read"
done
serve "$IMAGES/src/mixed.raw" error=EIO error-pread-rate=100%
expect_read_failure "failing server" "$url: reading " "$url"
grep -qF "Input/output error" "$tmp/err" ||
  { cat "$tmp/err" >&2; fail "failing server: the server's error is not said"; }

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
