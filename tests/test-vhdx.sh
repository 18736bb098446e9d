#!/usr/bin/env bash
# SPDX-License-Identifier: BSD-3-Clause
# VHDX beyond what the manifest tests cover: disks above 4 GiB (every
# byte and the extents), a log replayed in memory (the file untouched,
# the same result as QEMU's own replay, a warning), differencing images
# with backing=no and under the backing policy, format=vhdx on another
# file.  (The content of the other images, chains and logs included, is
# checked by test-decode-all.sh from the manifest.)
source ./tests/functions.sh
requires nbdkit
requires nbdcopy
requires qemu-img
images_manifest >/dev/null
MKVHDX="/usr/bin/python3 $top_srcdir/scripts/mkvhdx.py"

export tmp
serve ()                        # serve PLUGIN-ARGS...: copy to $tmp/out
{
  rm -f "$tmp/out"
  qemount_nbdkit -r --run 'nbdcopy "$uri" "$tmp/out"' -- "$@" </dev/null 2>"$tmp/err"
}
expect_message ()               # expect_message TEXT WHAT
{
  grep -qF -- "$1" "$tmp/err" || { cat "$tmp/err" >&2; fail "$2: no '$1' in the messages"; }
}

# Above 4 GiB, data across 2 GiB and 4 GiB: every byte through the image
# layer and through nbdkit (nbdcopy keeps the holes: cmp reads them back
# as zeros), and extents as the BAT says.
big="$IMAGES/vhdx-big"
qemount_read "$big/big.vhdx" | cmp - "$big/big.raw" ||
  fail "big.vhdx: qemount-read output differs from big.raw"
serve file="$big/big-b1m.vhdx" || { cat "$tmp/err" >&2; fail "big-b1m.vhdx: nbdcopy failed"; }
cmp "$tmp/out" "$big/big.raw" || fail "big-b1m.vhdx: nbdcopy output differs from big.raw"
for image in big.vhdx big-b1m.vhdx; do
  qemount_read -m "$big/$image" > "$tmp/extents" ||
    fail "$image: qemount-read -m failed"
  $MKVHDX map "$big/$image" |
    /usr/bin/python3 -c '
import json, sys
want = [(e["start"], e["length"], 3 if e["zero"] else 0)
        for e in json.load(sys.stdin)]
got = [tuple(map(int, line.split())) for line in open(sys.argv[1])]
sys.exit(0 if got == want else "extents %r, the BAT says %r" % (got[:8], want[:8]))
' "$tmp/extents" || fail "$image: extents differ from the BAT"
done

# A log: replayed in memory, with a warning; the file is not written;
# QEMU replaying the same log (on a copy, the only way it reads one)
# gets the same disk.
for log in simple wrap; do
  image="$IMAGES/vhdx/mk-log-$log.vhdx"
  before=$(sha256sum < "$image")
  serve file="$image" || { cat "$tmp/err" >&2; fail "log-$log: refused"; }
  cmp -s "$tmp/out" "$image.expected.raw" || fail "log-$log: output differs from the source"
  expect_message "warning: $image: the image has a log its last writer did not apply" "log-$log"
  [ "$(sha256sum < "$image")" = "$before" ] || fail "log-$log: the image file changed"
done
cp "$IMAGES/vhdx/mk-log-simple.vhdx" "$tmp/qemu.vhdx"
qemu-img check -q -r all "$tmp/qemu.vhdx" >/dev/null 2>&1 || :
qemu-img convert -f vhdx -O raw "$tmp/qemu.vhdx" "$tmp/qemu.raw" ||
  fail "qemu-img could not replay mk-log-simple.vhdx"
cmp -s "$tmp/qemu.raw" "$IMAGES/vhdx/mk-log-simple.vhdx.expected.raw" ||
  fail "QEMU's replay of mk-log-simple.vhdx differs from ours"

# Differencing: backing=no serves the child's own sectors, zeros for
# the rest, with a warning.
child="$IMAGES/vhdx-chain/child.vhdx"
serve file="$child" backing=no || { cat "$tmp/err" >&2; fail "child backing=no: refused"; }
cmp -s "$tmp/out" "$child.nobacking.expected.raw" || fail "child backing=no: output differs"
expect_message "warning: $child: parent './base.vhdx' is not followed (backing=no)" "child backing=no"

# A parent in another directory: refused by default, followed with
# backing=yes; a parent that is not the one the child was made from.
mkdir "$tmp/base" "$tmp/child"
cp "$IMAGES/vhdx-chain/base.vhdx" "$tmp/base/"
$MKVHDX --block-size 1048576 --parent "$tmp/base/base.vhdx" \
  --parent-raw "$IMAGES/src/chainbase.raw" --relative-path '..\base\base.vhdx' \
  "$IMAGES/vhdx-chain/child.expected.raw" "$tmp/child/child.vhdx"
if serve file="$tmp/child/child.vhdx"; then fail "parent in another directory: followed"; fi
expect_message "backing file '../base/base.vhdx' is outside the image's directory" "parent in another directory"
serve file="$tmp/child/child.vhdx" backing=yes || { cat "$tmp/err" >&2; fail "backing=yes: refused"; }
cmp -s "$tmp/out" "$IMAGES/vhdx-chain/child.expected.raw" || fail "backing=yes: output differs"
qemu-img convert -O vhdx "$IMAGES/src/chainbase.raw" "$tmp/base/other.vhdx"
mv "$tmp/base/other.vhdx" "$tmp/base/base.vhdx"
if serve file="$tmp/child/child.vhdx" backing=yes; then fail "replaced parent: accepted"; fi
expect_message "is not the image this one was made from" "replaced parent"

# format=vhdx on a file that is not one.
truncate -s 2M "$tmp/raw.img"
if serve file="$tmp/raw.img" format=vhdx; then fail "format=vhdx on a raw file: accepted"; fi
expect_message "$tmp/raw.img: not a VHDX image (no vhdxfile signature)" "format=vhdx on a raw file"
echo "PASS: VHDX above 4 GiB, logs, differencing images and their policy"
