#!/usr/bin/env bash
# SPDX-License-Identifier: BSD-3-Clause
# raw, qcow2, ploop and qsnap -> qsnap -> read back equals the source,
# through the image layer (qemount-read) and through nbdkit (nbdcopy),
# for each codec and block sizes 4K, 64K and 1M, on an image with zeros,
# duplicate blocks and a size that is not a multiple of the block size.
source ./tests/functions.sh
requires nbdkit
requires nbdcopy
images_manifest >/dev/null
: "${QSNAP_TOOL:=$top_builddir/tests/qsnap-tool}"
qsnap () { env $QEMOUNT_READ_ENV "$QSNAP_TOOL" "$@"; }

export out="$tmp/out"
check_reads ()                  # check_reads QSNAP EXPECTED WHAT
{
  local want
  want=$(sha256sum < "$2")
  qemount_read "$1" > "$tmp/out" 2>"$tmp/err" ||
    { cat "$tmp/err" >&2; fail "$3: qemount-read cannot read the snapshot"; }
  [ "$(sha256sum < "$tmp/out")" = "$want" ] || fail "$3: qemount-read differs from the source"
  rm -f "$tmp/out"
  qemount_nbdkit -r --run 'nbdcopy "$uri" "$out"' -- file="$1" \
    2>"$tmp/err" </dev/null ||
    { cat "$tmp/err" >&2; fail "$3: nbdcopy cannot read the snapshot"; }
  [ "$(sha256sum < "$tmp/out")" = "$want" ] || fail "$3: nbdcopy differs from the source"
}

$PYTHON "$top_srcdir/tests/qsnap-image.py" "$tmp/img.raw"
for codec in zstd lz4 auto; do
  for bs in 4K 64K 1M; do
    qsnap create --codec $codec --block-size $bs --jobs 2 \
      "$tmp/img.raw" "$tmp/s.qsnap" >/dev/null || fail "$codec $bs: create failed"
    check_reads "$tmp/s.qsnap" "$tmp/img.raw" "$codec $bs"
  done
done

# Other formats in (a backing chain and a ploop chain among them).
for case in "qcow2/comp-zstd-c64k.qcow2 qcow2/comp-zstd-c64k.qcow2.expected.raw" \
            "qcow2/zero-v3-c4k.qcow2 qcow2/zero-v3-c4k.qcow2.expected.raw" \
            "qcow2-chain/top.qcow2 qcow2-chain/top.qcow2.expected.raw" \
            "ploop/v2-c1m.hdd ploop/v2-c1m.hdd.expected.raw" \
            "ploop/v1-c4k.hdd ploop/v1-c4k.hdd.expected.raw" \
            "ploop-chain/DiskDescriptor.xml ploop-chain/root.hdd.2.expected.raw" \
            "src/tiny.raw src/tiny.raw"; do
  set -- $case
  qsnap create "$IMAGES/$1" "$tmp/s.qsnap" >/dev/null 2>"$tmp/err" ||
    { cat "$tmp/err" >&2; fail "$1: create failed"; }
  check_reads "$tmp/s.qsnap" "$IMAGES/$2" "$1"
done

# A qsnap is an input like any other.
qsnap create --block-size 64K "$tmp/img.raw" "$tmp/a.qsnap" >/dev/null
qsnap create --block-size 4K --codec lz4 "$tmp/a.qsnap" "$tmp/b.qsnap" >/dev/null ||
  fail "qsnap -> qsnap: create failed"
check_reads "$tmp/b.qsnap" "$tmp/img.raw" "qsnap -> qsnap"

# An empty disk.
: > "$tmp/empty.raw"
qsnap create "$tmp/empty.raw" "$tmp/e.qsnap" >/dev/null || fail "empty: create failed"
qsnap verify "$tmp/e.qsnap" >/dev/null || fail "empty: verify failed"
qemount_read "$tmp/e.qsnap" > "$tmp/out" || fail "empty: cannot read"
[ ! -s "$tmp/out" ] || fail "empty: reads as data"
echo "PASS: qsnap round trips"
