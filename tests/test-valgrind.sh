#!/usr/bin/env bash
# SPDX-License-Identifier: BSD-3-Clause
# valgrind over the plugin's whole open/read/close cycle for every
# format, the overlay and the block cache: no invalid access, no
# uninitialised use, no definite leak.
source ./tests/functions.sh
requires nbdkit
requires valgrind
[ "$SANITIZERS" != yes ] || skip "valgrind cannot run the ASan-built plugin (the unsanitized run covers this)"
$PYTHON -c 'import zstandard, lz4.block, xxhash' 2>/dev/null || skip "python3-zstandard, -lz4 or -xxhash is missing"
images_manifest >/dev/null

head -c 3000000 "$IMAGES/src/small.raw" > "$tmp/src.raw"
$PYTHON "$top_srcdir/tests/mkqsnap.py" "$tmp/s.qsnap" --stream disk="$tmp/src.raw" \
  --stream memory="$tmp/src.raw" --block-size 65536
export tmp IMAGES
grind ()                        # grind RUN-COMMAND PLUGIN-ARGS...
{
  local run=$1; shift
  valgrind --leak-check=full --errors-for-leak-kinds=definite --error-exitcode=9 \
    --log-file="$tmp/vg.log" \
    nbdkit -f -U - "$QEMOUNT_PLUGIN" "$@" --run "$run" </dev/null >/dev/null 2>"$tmp/err" ||
    { cat "$tmp/vg.log" "$tmp/err" >&2; fail "valgrind: $*"; }
}
read_all='nbdinfo --map "$uri" >/dev/null && nbdcopy "$uri" null:'
for image in qcow2/comp-zstd-c64k.qcow2 qcow2/comp-zlib-c4k.qcow2 qcow2/extl2-c64k.qcow2 \
             qcow2-chain/top.qcow2 ploop/v1-c4k-shuffled.hdd ploop-chain/DiskDescriptor.xml \
             vhdx/mk-log-wrap.vhdx vhdx-chain/grandchild.vhdx; do
  grind "$read_all" -r file="$IMAGES/$image"
done
grind "$read_all" -r file="$tmp/s.qsnap" cache=1M
grind "$read_all" -r file="$tmp/s.qsnap" cache=0
grind "nbdcopy $IMAGES/src/tiny.raw \"\$uri\"" file="$tmp/src.raw" overlay="$tmp/ovl"
grind "$read_all" -r file="$tmp/src.raw" overlay="$tmp/ovl"
grind "nbdcopy $IMAGES/src/tiny.raw \"\$uri\"" file="$IMAGES/src/tiny.raw"
echo "PASS: valgrind clean for every format, the overlay and the cache"
