#!/usr/bin/env bash
# SPDX-License-Identifier: BSD-3-Clause
# Writes through the copy-on-write overlay, for raw, qcow2 and a ploop
# chain: random writes/zeroes/trims read back as a model says, survive a
# restart on the same (persistent) overlay, never touch the base image;
# an overlay refuses another base, and a damaged overlay is refused.
source ./tests/functions.sh
requires nbdkit
requires nbdcopy
$PYTHON -c 'import nbd' 2>/dev/null || skip "python3-libnbd is not installed"
images_manifest >/dev/null

export tmp top_srcdir PYTHON
check_ops ()                    # check_ops INITIAL MODEL-OUT SEED PLUGIN-ARGS...
{
  local initial=$1 model=$2 seed=$3; shift 3
  qemount_nbdkit --run "\$PYTHON \$top_srcdir/tests/overlay-check.py \"\$uri\" $initial $model --seed $seed" -- \
    "$@" </dev/null || fail "$*: writes do not read back"
}
try_read ()                     # try_read OUTPUT PLUGIN-ARGS...: read-only copy
{
  local out=$1; shift
  rm -f "$out"
  qemount_nbdkit -r --run "nbdcopy \"\$uri\" $out" -- "$@" </dev/null 2>"$tmp/err"
}
read_all ()                     # read_all OUTPUT PLUGIN-ARGS...: must succeed
{
  try_read "$@" || { cat "$tmp/err" >&2; fail "${*:2}: cannot read"; }
}

for case in "src/mixed.raw src/mixed.raw" \
            "src/tiny.raw src/tiny.raw" \
            "qcow2/comp-zstd-c64k.qcow2 qcow2/comp-zstd-c64k.qcow2.expected.raw" \
            "ploop-chain/DiskDescriptor.xml ploop-chain/root.hdd.2.expected.raw"; do
  set -- $case
  image=$IMAGES/$1 expected=$IMAGES/$2
  [ -e "$image" ] || fail "missing test image $1"
  before=$(cat "$(dirname "$image")"/* | sha256sum)

  # Ephemeral: nbdkit without -r and without overlay=.
  check_ops "$expected" "$tmp/model" 1 file="$image"

  # Persistent: write, restart read-only and compare, write more.
  rm -f "$tmp/ovl"
  check_ops "$expected" "$tmp/model1" 2 file="$image" overlay="$tmp/ovl"
  read_all "$tmp/out" file="$image" overlay="$tmp/ovl"
  cmp -s "$tmp/out" "$tmp/model1" || fail "$1: overlay content lost across a restart"
  qemount_nbdkit -r --run "\$PYTHON \$top_srcdir/tests/nbd-check.py extents \"\$uri\" $tmp/model1" -- \
    file="$image" overlay="$tmp/ovl" </dev/null || fail "$1: extents through the overlay are wrong"
  check_ops "$tmp/model1" "$tmp/model2" 3 file="$image" overlay="$tmp/ovl"
  read_all "$tmp/out" file="$image" overlay="$tmp/ovl"
  cmp -s "$tmp/out" "$tmp/model2" || fail "$1: second session's writes lost"

  # The base image (and the rest of its directory) is untouched.
  [ "$(cat "$(dirname "$image")"/* | sha256sum)" = "$before" ] || fail "$1: the base image was modified"
  read_all "$tmp/out" file="$image"
  cmp -s "$tmp/out" "$expected" || fail "$1: base reads differently after overlay use"
done

# An overlay belongs to one base.
rm -f "$tmp/ovl"
check_ops "$IMAGES/src/mixed.raw" "$tmp/model" 4 file="$IMAGES/src/mixed.raw" overlay="$tmp/ovl"
if try_read "$tmp/out" file="$IMAGES/src/small.raw" overlay="$tmp/ovl"; then
  fail "overlay accepted for another base"
fi
grep -qF "$tmp/ovl: overlay belongs to a different base image (it was made for raw image $IMAGES/src/mixed.raw" "$tmp/err" ||
  { cat "$tmp/err" >&2; fail "no clear error for an overlay of another base"; }

# A damaged header, and a file that is not an overlay.
cp "$tmp/ovl" "$tmp/bad-ovl"
printf 'X' | dd of="$tmp/bad-ovl" bs=1 seek=100 conv=notrunc status=none
if try_read "$tmp/out" file="$IMAGES/src/mixed.raw" overlay="$tmp/bad-ovl"; then
  fail "damaged overlay accepted"
fi
grep -qF "$tmp/bad-ovl: overlay header checksum mismatch" "$tmp/err" || { cat "$tmp/err" >&2; fail "damaged overlay: unclear error"; }
if try_read "$tmp/out" file="$IMAGES/src/mixed.raw" overlay="$IMAGES/src/small.raw"; then
  fail "non-overlay file accepted as an overlay"
fi
grep -qF "small.raw: not a qemount overlay" "$tmp/err" || { cat "$tmp/err" >&2; fail "not an overlay: unclear error"; }

# A map entry pointing past the end of the file is refused, not followed.
cp "$tmp/ovl" "$tmp/bad-map"
printf '\377\377\377\177' | dd of="$tmp/bad-map" bs=1 seek=4096 conv=notrunc status=none
if try_read "$tmp/out" file="$IMAGES/src/mixed.raw" overlay="$tmp/bad-map"; then
  fail "overlay with a bad map accepted"
fi
grep -qF "points past the end of the file (corrupt)" "$tmp/err" || { cat "$tmp/err" >&2; fail "bad map: unclear error"; }
echo "PASS: overlay"
