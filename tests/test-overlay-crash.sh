#!/usr/bin/env bash
# SPDX-License-Identifier: BSD-3-Clause
# Crash consistency of the overlay: nbdkit is killed with SIGKILL at
# random moments while a client writes and flushes (60 times), then
# restarted on the same overlay.  Every write acknowledged before a
# completed flush must be there, no byte may hold anything but its
# flushed value or a value written after that flush, and the overlay
# must open (its map passes the consistency checks at load).
source ./tests/functions.sh
requires nbdkit
$PYTHON -c 'import nbd' 2>/dev/null || skip "python3-libnbd is not installed"

kills=60
head -c 8M /dev/urandom > "$tmp/base.raw"
cp "$tmp/base.raw" "$tmp/state.model"
base_sum=$(sha256sum < "$tmp/base.raw")
sock=$tmp/nbd.sock
uri="nbd+unix:///?socket=$sock"
pid=""
stop ()
{
  [ -n "$pid" ] || pid=$(cat "$tmp/nbdkit.pid" 2>/dev/null) || :
  [ -z "$pid" ] || kill -9 "$pid" 2>/dev/null || :
  pid=""
}
on_exit stop

start ()                        # start [nbdkit options]: background server
{
  qemount_nbdkit_start "$sock" "$@" -- file="$tmp/base.raw" overlay="$tmp/ovl"
  pid=$nbdkit_pid
}

RANDOM=42
for ((i = 1; i <= kills; i++)); do
  start
  $PYTHON "$top_srcdir/tests/crash-client.py" write "$uri" "$tmp/state" "$i" &
  client=$!
  sleep "0.$((RANDOM % 4))$((RANDOM % 10))"
  kill -9 "$pid"; pid=""
  wait "$client" || fail "kill $i: the client failed"

  start -r
  $PYTHON "$top_srcdir/tests/crash-client.py" check "$uri" "$tmp/state" ||
    { cat "$tmp/nbdkit.log" >&2; fail "kill $i: data after the crash is wrong"; }
  stop
  # What may or may not have landed is settled now: take the disk as it
  # is as the next round's flushed state.
  start -r
  nbdcopy "$uri" "$tmp/state.model" || fail "kill $i: cannot read back"
  stop
  : > "$tmp/state.journal"
done
[ "$(sha256sum < "$tmp/base.raw")" = "$base_sum" ] || fail "the base image was modified"
echo "PASS: $kills SIGKILLs during writes, every flushed write survived"
