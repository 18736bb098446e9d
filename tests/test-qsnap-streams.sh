#!/usr/bin/env bash
# SPDX-License-Identifier: BSD-3-Clause
# Streams of one qsnap file are NBD exports by name: nbdinfo --list
# shows each, nbdcopy of each export name reads that stream, and the
# default export is "disk".
source ./tests/functions.sh
requires nbdkit
requires nbdcopy
requires nbdinfo
images_manifest >/dev/null
: "${QSNAP_TOOL:=$top_builddir/tests/qsnap-tool}"
qsnap () { env $QEMOUNT_READ_ENV "$QSNAP_TOOL" "$@"; }

head -c 3000000 /dev/urandom > "$tmp/mem.raw"
qsnap create "$IMAGES/src/mixed.raw" "$tmp/vm.qsnap" \
  --stream memory="$tmp/mem.raw" --stream notes="$IMAGES/src/tiny.raw" \
  >/dev/null || fail "create failed"

export tmp
qemount_nbdkit -r --run 'nbdinfo --list "$uri" > $tmp/list' -- \
  file="$tmp/vm.qsnap" </dev/null || fail "nbdinfo --list failed"
for name in disk memory notes; do
  grep -qx "export=\"$name\":" "$tmp/list" || { cat "$tmp/list" >&2; fail "export $name not listed"; }
done

read_export ()                  # read_export NAME EXPECTED
{
  rm -f "$tmp/out"
  qemount_nbdkit -r --run "nbdcopy 'nbd+unix:///$1?socket='\"\$unixsocket\" $tmp/out" -- \
    file="$tmp/vm.qsnap" </dev/null || fail "export '$1': nbdcopy failed"
  cmp -s "$tmp/out" "$2" || fail "export '$1' does not read as its stream"
}
read_export disk "$IMAGES/src/mixed.raw"
read_export memory "$tmp/mem.raw"
read_export notes "$IMAGES/src/tiny.raw"
read_export "" "$IMAGES/src/mixed.raw"
echo "PASS: qsnap streams as export names"
