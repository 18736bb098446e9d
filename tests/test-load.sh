#!/usr/bin/env bash
# SPDX-License-Identifier: BSD-3-Clause
# Load: 16 connections (multi-conn) reading and writing at once for a
# bounded time through an overlay on a qsnap base with a small block
# cache, checked against a model (tests/load-check.py); no mismatch, no
# deadlock (timeout), and nbdkit's peak memory stays bounded while the
# cache is 8 MiB.
source ./tests/functions.sh
requires nbdkit
requires timeout
$PYTHON -c 'import nbd, zstandard, lz4.block, xxhash' 2>/dev/null ||
  skip "python3-libnbd, -zstandard, -lz4 or -xxhash is missing"

head -c 32M /dev/urandom > "$tmp/base.raw"
$PYTHON "$top_srcdir/tests/mkqsnap.py" "$tmp/base.qsnap" --stream disk="$tmp/base.raw" \
  --block-size 65536 --codec mixed
export tmp top_srcdir PYTHON
timeout 300 env $nbdkit_env nbdkit -f -U - "$QEMOUNT_PLUGIN" file="$tmp/base.qsnap" \
  overlay="$tmp/ovl" cache=8M --run '
    $PYTHON $top_srcdir/tests/load-check.py "$uri" $tmp/base.raw 15 16 &&
    grep VmHWM /proc/$PPID/status > $tmp/hwm' </dev/null ||
  fail "load: mismatch, error or deadlock (status $?)"
hwm_kb=$(awk '{print $2}' "$tmp/hwm")
echo "nbdkit peak resident memory: $hwm_kb kB"
# The sanitizers' shadow memory and quarantine inflate this; the bound is
# for the real build.
if [ "$SANITIZERS" != yes ] && [ "$hwm_kb" -gt $((128 * 1024)) ]; then
  fail "nbdkit used $hwm_kb kB with cache=8M"
fi
echo "PASS: 16 connections, no mismatch, no deadlock"
