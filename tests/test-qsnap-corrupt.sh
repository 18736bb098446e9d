#!/usr/bin/env bash
# SPDX-License-Identifier: BSD-3-Clause
# Damaged qsnap files: verify passes on a good file and names the block
# whose stored byte was flipped (or the index page); reading that block
# is an I/O error, never data, while other blocks still read; truncated,
# version-bumped and header-damaged files are refused with a clear
# message by info, verify, the image layer and the plugin.
source ./tests/functions.sh
requires nbdkit
requires nbdcopy
$PYTHON -c 'import nbd' 2>/dev/null || skip "python3-libnbd is not installed"
: "${QSNAP_TOOL:=$top_builddir/tests/qsnap-tool}"
qsnap () { env $QEMOUNT_READ_ENV "$QSNAP_TOOL" "$@"; }
patch () { $PYTHON "$top_srcdir/tests/qsnap-patch.py" "$@"; }
export PYTHON

# Block 0 holds random data: stored raw, first, at offset 4096.
$PYTHON "$top_srcdir/tests/qsnap-image.py" "$tmp/img.raw"
qsnap create --block-size 64K "$tmp/img.raw" "$tmp/good.qsnap" >/dev/null
qsnap verify "$tmp/good.qsnap" > "$tmp/out" || fail "verify fails on a good file"
grep -q "good.qsnap: all [0-9]* stored blocks are good" "$tmp/out" || fail "verify: no summary"

# A flipped byte in a stored block.
cp "$tmp/good.qsnap" "$tmp/flip.qsnap"
patch "$tmp/flip.qsnap" flip $((4096 + 1000))
status=0
qsnap verify "$tmp/flip.qsnap" > "$tmp/out" 2>"$tmp/err" || status=$?
[ $status = 1 ] || fail "verify of a flipped byte: exit status $status"
grep -qF "$tmp/flip.qsnap: stream 'disk' block 0 (offset 4096): checksum mismatch" "$tmp/err" ||
  { cat "$tmp/err" >&2; fail "verify does not name the bad block"; }
# Block 0's bytes are shared with its duplicates (the region repeats at
# 2 MiB and 7 MiB): each is named, and nothing else.
[ "$(grep -c 'checksum mismatch' "$tmp/err")" = 3 ] || { cat "$tmp/err" >&2; fail "verify: wrong number of bad blocks"; }
grep -q "3 problems found" "$tmp/out" || fail "verify: no count of problems"

# Reading it: EIO and a message, not data; other blocks still read.
if qemount_read "$tmp/flip.qsnap" > /dev/null 2>"$tmp/err"; then
  fail "qemount-read returned data from a corrupt block"
fi
grep -qF "block 0 (offset 4096): checksum mismatch" "$tmp/err" ||
  { cat "$tmp/err" >&2; fail "qemount-read: unclear error for a corrupt block"; }
qemount_nbdkit -r --run "\$PYTHON -c '
import errno, sys, nbd
h = nbd.NBD()
h.connect_uri(sys.argv[1])
expected = open(sys.argv[2], \"rb\").read()
assert h.pread(65536, 65536 * 5) == expected[65536 * 5:65536 * 6]
# Part of the block (through the block cache), then all of it (decoded
# straight into the reply).
for count, offset in ((4096, 8192), (65536, 0)):
    try:
        h.pread(count, offset)
        sys.exit(\"FAIL: a corrupt block read as data\")
    except nbd.Error as e:
        assert e.errno in (\"EIO\", errno.EIO), e
' \"\$uri\" $tmp/img.raw" -- file="$tmp/flip.qsnap" </dev/null 2>"$tmp/err" ||
  { cat "$tmp/err" >&2; fail "nbd: a corrupt block is not EIO, or a good one does not read"; }

# A damaged index page.
cp "$tmp/good.qsnap" "$tmp/index.qsnap"
patch "$tmp/index.qsnap" flip-index 30
if qsnap verify "$tmp/index.qsnap" >/dev/null 2>"$tmp/err"; then
  fail "verify passes a damaged index page"
fi
grep -qF "stream 'disk' index page 0: index page checksum mismatch" "$tmp/err" ||
  { cat "$tmp/err" >&2; fail "verify does not name the damaged index page"; }

# Files refused as a whole, by every reader, with one clear message.
said ()                         # said FILE MESSAGE: one line names both
{
  grep -F "$1: " "$tmp/err" | grep -qF "$2"
}
refused ()                      # refused FILE MESSAGE
{
  local cmd
  for cmd in info verify; do
    if qsnap $cmd "$1" >/dev/null 2>"$tmp/err"; then fail "$cmd accepts $1"; fi
    said "$1" "$2" || { cat "$tmp/err" >&2; fail "$cmd $1: no message '$2'"; }
  done
  if qemount_read "$1" >/dev/null 2>"$tmp/err"; then fail "qemount-read accepts $1"; fi
  said "$1" "$2" || { cat "$tmp/err" >&2; fail "qemount-read $1: no message '$2'"; }
  if qemount_nbdkit -r --run 'nbdcopy "$uri" null:' -- file="$1" </dev/null 2>"$tmp/err"; then
    fail "nbdkit serves $1"
  fi
  said "$1" "$2" || { cat "$tmp/err" >&2; fail "nbdkit $1: no message '$2'"; }
}
size=$(stat -c %s "$tmp/good.qsnap")
cp "$tmp/good.qsnap" "$tmp/trunc.qsnap"
truncate -s $((size / 2)) "$tmp/trunc.qsnap"
refused "$tmp/trunc.qsnap" "lies past the end of the file (truncated?)"
cp "$tmp/good.qsnap" "$tmp/short.qsnap"
truncate -s 2000 "$tmp/short.qsnap"
refused "$tmp/short.qsnap" "file is too short for a qsnap header (truncated?)"
cp "$tmp/good.qsnap" "$tmp/v2.qsnap"
patch "$tmp/v2.qsnap" version 2
refused "$tmp/v2.qsnap" "unsupported qsnap version (this reader knows version 1)"
cp "$tmp/good.qsnap" "$tmp/header.qsnap"
patch "$tmp/header.qsnap" flip 20
refused "$tmp/header.qsnap" "header checksum mismatch"
echo "PASS: damaged qsnap files"
