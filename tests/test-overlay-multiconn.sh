#!/usr/bin/env bash
# SPDX-License-Identifier: BSD-3-Clause
# Flushed writes survive a restart when several connections write and
# flush at once: 16 connections write and zero random ranges of a qcow2
# image through a persistent overlay, each flushes and disconnects, then
# nbdkit is stopped (SIGTERM in odd rounds, SIGKILL in even ones: a flush
# that returned must be on disk without the clean shutdown's help) and
# started again read-only on the same overlay, which must read exactly as
# flushed.  20 rounds, each on the overlay the last one left.
source ./tests/functions.sh
requires nbdkit
requires qemu-img
$PYTHON -c 'import nbd' 2>/dev/null || skip "python3-libnbd is not installed"

rounds=20
conns=16
head -c 68M /dev/urandom > "$tmp/base.raw"
qemu-img convert -f raw -O qcow2 "$tmp/base.raw" "$tmp/base.qcow2"
cp "$tmp/base.raw" "$tmp/model"
sock=$tmp/nbd.sock
uri="nbd+unix:///?socket=$sock"
pid=""
stop ()                         # stop SIGNAL: stop the server, wait for it
{
  [ -n "$pid" ] || return 0
  kill "-$1" "$pid" 2>/dev/null || :
  for _ in $(seq 600); do kill -0 "$pid" 2>/dev/null || break; sleep 0.05; done
  kill -0 "$pid" 2>/dev/null && fail "nbdkit $pid did not stop on SIG$1"
  pid=""
}
kill_server () { stop KILL; }
on_exit kill_server

start ()                        # start [nbdkit options]: background server
{
  qemount_nbdkit_start "$sock" "$@" -- file="$tmp/base.qcow2" overlay="$tmp/ovl"
  pid=$nbdkit_pid
}

for ((i = 1; i <= rounds; i++)); do
  signal=TERM
  [ $((i % 2)) = 0 ] && signal=KILL
  start
  $PYTHON "$top_srcdir/tests/multiconn-client.py" write "$uri" "$tmp/model" "$i" "$conns" ||
    { cat "$tmp/nbdkit.log" >&2; fail "round $i: a connection failed"; }
  stop "$signal"
  start -r
  $PYTHON "$top_srcdir/tests/multiconn-client.py" check "$uri" "$tmp/model" ||
    { cat "$tmp/nbdkit.log" >&2; fail "round $i (SIG$signal): flushed writes were lost"; }
  stop TERM
done
echo "PASS: $rounds rounds of $conns connections writing and flushing, nothing flushed was lost"
