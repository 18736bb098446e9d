#!/usr/bin/env bash
# SPDX-License-Identifier: BSD-3-Clause
# An overlay knows the base it was made for.  A copy of a qcow2 base
# that was written to since (away from every sampled place), or a raw
# base changed in its last 4 KiB, is refused; an identical copy, raw
# copies with other holes, and overlays made by qemount 0.1 are taken.
# overlay-readonly=true reads base + overlay and never writes the file.
source ./tests/functions.sh
requires nbdkit
requires nbdcopy
requires qemu-img
requires qemu-io
$PYTHON -c 'import nbd, xxhash' 2>/dev/null || skip "python3-libnbd or python3-xxhash is missing"

try_read ()                     # try_read OUTPUT PLUGIN-ARGS...: read-only copy
{
  local out=$1; shift
  rm -f "$out"
  qemount_nbdkit -r --run "nbdcopy \"\$uri\" $out" -- "$@" </dev/null 2>"$tmp/err"
}
write_at ()                     # write_at OFFSET BYTE PLUGIN-ARGS...: through nbdkit
{
  local offset=$1 byte=$2; shift 2
  qemount_nbdkit --run "\$PYTHON -c 'import nbd,sys; h=nbd.NBD(); h.connect_uri(sys.argv[1]); h.pwrite(bytes([$byte])*4096, $offset); h.flush()' \"\$uri\"" \
    -- "$@" </dev/null || fail "cannot write through $*"
}
refused ()                      # refused WHAT PLUGIN-ARGS...: other base
{
  local what=$1; shift
  try_read "$tmp/out" "$@" && fail "$what: the overlay was accepted"
  grep -qF "overlay belongs to a different base image" "$tmp/err" ||
    { cat "$tmp/err" >&2; fail "$what: no clear error"; }
}
export PYTHON

# 16 MiB of data with a zero area in the middle, as raw and qcow2.
head -c 6M /dev/urandom > "$tmp/disk.raw"
head -c 4M /dev/zero >> "$tmp/disk.raw"
head -c 6M /dev/urandom >> "$tmp/disk.raw"
qemu-img convert -f raw -O qcow2 "$tmp/disk.raw" "$tmp/base.qcow2"
write_at 0 7 file="$tmp/base.qcow2" overlay="$tmp/q.ovl"

# A copy of the qcow2 base is the same base...
cp "$tmp/base.qcow2" "$tmp/copy.qcow2"
try_read "$tmp/out" file="$tmp/copy.qcow2" overlay="$tmp/q.ovl" ||
  { cat "$tmp/err" >&2; fail "an identical copy of the base was refused"; }
# ...until something writes into its zero area, 4 KiB at 7 MiB + 12 KiB:
# none of the sampled places (64 KiB at each end, 4 KiB every 64 KiB
# from 64 KiB) comes near it, only the allocation map does.
qemu-io -f qcow2 -c "write -P 0x55 $((7 * 1048576 + 12288)) 4k" "$tmp/copy.qcow2" >/dev/null
refused "qcow2 clone written since" file="$tmp/copy.qcow2" overlay="$tmp/q.ovl"

# Raw: other holes are the same disk; another last 4 KiB is not.
write_at 0 7 file="$tmp/disk.raw" overlay="$tmp/r.ovl"
cp --sparse=always "$tmp/disk.raw" "$tmp/sparse.raw"
cp --sparse=never "$tmp/disk.raw" "$tmp/full.raw"
for copy in sparse full; do
  try_read "$tmp/out" file="$tmp/$copy.raw" overlay="$tmp/r.ovl" ||
    { cat "$tmp/err" >&2; fail "a $copy copy of the raw base was refused"; }
done
printf 'X' | dd of="$tmp/full.raw" bs=1 seek=$((16 * 1048576 - 100)) conv=notrunc status=none
refused "raw base with another last block" file="$tmp/full.raw" overlay="$tmp/r.ovl"

# An overlay made by qemount 0.1 (no feature bits, 16 samples) still opens.
$PYTHON "$top_srcdir/tests/old-overlay.py" "$tmp/disk.raw" raw "$tmp/disk.raw" "$tmp/old.ovl"
write_at 8192 9 file="$tmp/disk.raw" overlay="$tmp/old.ovl"
try_read "$tmp/out" file="$tmp/disk.raw" overlay="$tmp/old.ovl" ||
  { cat "$tmp/err" >&2; fail "an overlay of qemount 0.1 was refused"; }
[ "$(od -An -tu1 -j8192 -N1 "$tmp/out" | tr -d ' ')" = 9 ] ||
  fail "the write through a qemount 0.1 overlay did not read back"
head -c 16M /dev/urandom > "$tmp/other.raw"
refused "qemount 0.1 overlay on another base" file="$tmp/other.raw" overlay="$tmp/old.ovl"

# overlay-readonly=true: base + overlay, the overlay file untouched even
# by a writable connection (which gets a temporary overlay on top).
before=$(sha256sum < "$tmp/q.ovl")
try_read "$tmp/out" file="$tmp/base.qcow2" overlay="$tmp/q.ovl" overlay-readonly=true ||
  { cat "$tmp/err" >&2; fail "overlay-readonly=true: cannot read"; }
{ printf '\007%.0s' $(seq 4096); tail -c +4097 "$tmp/disk.raw"; } | cmp -s - "$tmp/out" ||
  fail "overlay-readonly=true does not read the base as the overlay changed it"
write_at 0 8 file="$tmp/base.qcow2" overlay="$tmp/q.ovl" overlay-readonly=true
chmod a-w "$tmp/q.ovl"
try_read "$tmp/out" file="$tmp/base.qcow2" overlay="$tmp/q.ovl" overlay-readonly=true ||
  { cat "$tmp/err" >&2; fail "overlay-readonly=true: cannot read a read-only overlay file"; }
[ "$(od -An -tu1 -N1 "$tmp/out" | tr -d ' ')" = 7 ] ||
  fail "a write with overlay-readonly=true reached the overlay"
[ "$(sha256sum < "$tmp/q.ovl")" = "$before" ] || fail "overlay-readonly=true changed the overlay file"

try_read "$tmp/out" file="$tmp/base.qcow2" overlay="$tmp/none.ovl" overlay-readonly=true &&
  fail "overlay-readonly=true made a missing overlay"
grep -qF "$tmp/none.ovl: No such file or directory" "$tmp/err" ||
  { cat "$tmp/err" >&2; fail "overlay-readonly=true, missing overlay: unclear error"; }
[ ! -e "$tmp/none.ovl" ] || fail "overlay-readonly=true created the overlay"
try_read "$tmp/out" file="$tmp/base.qcow2" overlay-readonly=true &&
  fail "overlay-readonly=true without overlay= was accepted"
grep -qF "overlay-readonly=true needs overlay=<PATH>" "$tmp/err" ||
  { cat "$tmp/err" >&2; fail "overlay-readonly=true alone: unclear error"; }
echo "PASS: overlay fingerprint and overlay-readonly"
