#!/usr/bin/env bash
# SPDX-License-Identifier: BSD-3-Clause
# The qsnap reader against files from tests/mkqsnap.py, an independent
# writer made from docs/qsnap.md: every stream reads back as its source
# through nbdkit (one export per stream) and the image layer, with all
# block kinds, block sizes, dedup, thin parents and the cache on or off;
# damaged files give an error naming the file and the rule, never data.
source ./tests/functions.sh
requires nbdkit
requires nbdcopy
requires nbdinfo
$PYTHON -c 'import nbd, zstandard, lz4.block, xxhash' 2>/dev/null ||
  skip "python3-libnbd, python3-zstandard, python3-lz4 or python3-xxhash is missing"
images_manifest >/dev/null
mk () { $PYTHON "$top_srcdir/tests/mkqsnap.py" "$@"; }

# Sources: the mixed test image (zeros, repeats, random, text) and a
# "memory" stream whose size is not a multiple of any block size.
disk=$IMAGES/src/mixed.raw
head -c 3000000 "$IMAGES/src/small.raw" > "$tmp/memory.raw"
cat "$tmp/memory.raw" "$tmp/memory.raw" | head -c 5000000 > "$tmp/memory2.raw"

export tmp
read_export ()                  # read_export FILE EXPORT OUTPUT [PLUGIN-ARGS...]
{
  local file=$1 export=$2 out=$3; shift 3
  rm -f "$out"
  qemount_nbdkit -r --run "nbdcopy 'nbd+unix:///$export?socket='\"\$unixsocket\" $out" -- \
    file="$file" "$@" </dev/null 2>"$tmp/err"
}

for bs in 4096 65536 1048576; do
  for codec in mixed raw lz4 zstd; do
    q=$tmp/s-$bs-$codec.qsnap
    mk "$q" --stream disk="$disk" --stream memory="$tmp/memory2.raw" \
      --block-size $bs --codec $codec
    read_export "$q" disk "$tmp/out" || { cat "$tmp/err" >&2; fail "$q: cannot read disk"; }
    cmp -s "$tmp/out" "$disk" || fail "$bs/$codec: disk stream differs"
    read_export "$q" memory "$tmp/out" || { cat "$tmp/err" >&2; fail "$q: cannot read memory"; }
    cmp -s "$tmp/out" "$tmp/memory2.raw" || fail "$bs/$codec: memory stream differs"
    qemount_read "$q" > "$tmp/out" || fail "$q: qemount-read failed"
    cmp -s "$tmp/out" "$disk" || fail "$bs/$codec: image layer read differs"
  done
done

q=$tmp/s-65536-mixed.qsnap
# Streams are exports; the default export is "disk".
qemount_nbdkit -r --run 'nbdinfo --list --json "$uri"' -- file="$q" </dev/null > "$tmp/list.json"
jq -e '[.exports[]."export-name"] | sort == ["disk","memory"]' "$tmp/list.json" >/dev/null ||
  { cat "$tmp/list.json" >&2; fail "exports are not disk and memory"; }
read_export "$q" "" "$tmp/out" && cmp -s "$tmp/out" "$disk" || fail "default export is not the disk stream"
if read_export "$q" swap "$tmp/out"; then fail "unknown export accepted"; fi
grep -qF "no export (stream) called 'swap'" "$tmp/err" || { cat "$tmp/err" >&2; fail "unknown export: unclear error"; }

# Concurrent unaligned reads and extents, with the cache on, tiny, off.
export disk top_srcdir PYTHON
for cache in 256M 128K 0; do
  qemount_nbdkit -r --run "\$PYTHON \$top_srcdir/tests/nbd-check.py reads \"\$uri\" \"\$disk\" --count 150 --conns 4" -- \
    file="$q" cache=$cache </dev/null || fail "random reads with cache=$cache"
done
qemount_nbdkit -r --run "\$PYTHON \$top_srcdir/tests/nbd-check.py extents \"\$uri\" \"\$disk\"" -- \
  file="$q" </dev/null || fail "extents"

# Thin: a child storing only what differs from its parent.
cp "$disk" "$tmp/changed.raw"
printf 'changed!' | dd of="$tmp/changed.raw" bs=1 seek=100000 conv=notrunc status=none
head -c 70000 /dev/urandom | dd of="$tmp/changed.raw" bs=1 seek=5000000 conv=notrunc status=none
mk "$tmp/child.qsnap" --stream disk="$tmp/changed.raw" --parent "$q" --parent-raw disk="$disk"
[ "$(stat -c %s "$tmp/child.qsnap")" -lt $(( $(stat -c %s "$q") / 4 )) ] || fail "thin child is not small"
read_export "$tmp/child.qsnap" disk "$tmp/out" || { cat "$tmp/err" >&2; fail "thin child unreadable"; }
cmp -s "$tmp/out" "$tmp/changed.raw" || fail "thin child reads wrong"

# Damaged files.
expect_error ()                 # expect_error BREAK MESSAGE [when=open|read]
{
  local brk=$1 message=$2 bad=$tmp/bad-$1.qsnap status=0
  mk "$bad" --stream disk="$disk" --break "$brk"
  read_export "$bad" disk "$tmp/out" || status=$?
  [ "$status" -ne 0 ] || fail "$brk: damaged file read without error"
  grep -F "$bad" "$tmp/err" | grep -qF -- "$message" || { cat "$tmp/err" >&2; fail "$brk: no '$message' naming the file"; }
  status=0
  qemount_read "$bad" >/dev/null 2>"$tmp/err" || status=$?
  [ "$status" -ne 0 ] && [ "$status" -lt 128 ] || fail "$brk: qemount-read status $status"
  grep -qF -- "$message" "$tmp/err" || { cat "$tmp/err" >&2; fail "$brk: qemount-read: no '$message'"; }
}
expect_error flip-data "checksum mismatch, the stored data is corrupt"
expect_error flip-index "index page checksum mismatch"
expect_error version "unsupported qsnap version"
expect_error truncate "past the end of the file (truncated?)"
expect_error offset-past-end "stored bytes lie outside the data area"
mk "$tmp/bad-parent.qsnap" --stream disk="$tmp/changed.raw" --parent "$q" --parent-raw disk="$disk" --break parent-id
if read_export "$tmp/bad-parent.qsnap" disk "$tmp/out"; then fail "wrong parent accepted"; fi
grep -qF "is not the snapshot this one was made from" "$tmp/err" || { cat "$tmp/err" >&2; fail "wrong parent: unclear error"; }
mv "$q" "$tmp/moved.qsnap"
if read_export "$tmp/child.qsnap" disk "$tmp/out"; then fail "missing parent accepted"; fi
grep -qF "child.qsnap: backing file 's-65536-mixed.qsnap'" "$tmp/err" || { cat "$tmp/err" >&2; fail "missing parent: unclear error"; }
echo "PASS: qsnap reader"
