#!/usr/bin/env bash
# SPDX-License-Identifier: BSD-3-Clause
# qcow2 internal snapshots: snapshot=NAME (plugin) and --snapshot NAME
# (qemount) serve the disk as it was when the snapshot was taken, at the
# size it had then, read-only.  References from QEMU: a copy of the
# image reverted to the snapshot (qemu-img snapshot -a, which also takes
# back the size) converted to raw, and qemu-img convert -l (which reads
# the snapshot at the image's current size).  qemount info lists the
# snapshots as qemu-img info does.  Unknown names and formats without
# snapshots are refused, and the mount of an ext4 snapshot shows the
# files of then.
source ./tests/qemount-functions.sh
requires nbdkit
requires nbdcopy
requires qemu-img
requires qemu-io
requires jq
$PYTHON -c 'import nbd' 2>/dev/null || skip "python3-libnbd is not installed"

img="$tmp/snap.qcow2"
M=$((1024 * 1024))

# Compressed clusters under the first snapshot, then: s1, overwrite and
# zero some, grow the disk, s2, write again and discard.
head -c $((3 * M)) /dev/urandom > "$tmp/base.raw"
truncate -s $((4 * M)) "$tmp/base.raw"
qemu-img convert -q -c -O qcow2 "$tmp/base.raw" "$img"
qemu-io -f qcow2 -c "write -P 0xa1 $((3 * M + 65536)) 64k" "$img" >/dev/null
qemu-img snapshot -c s1 "$img"
qemu-io -f qcow2 -c "write -P 0xb2 $((M / 2)) 1M" -c "write -z $((2 * M)) 128k" "$img" >/dev/null
qemu-img resize -q "$img" $((6 * M))
qemu-io -f qcow2 -c "write -P 0xb3 $((5 * M)) 64k" "$img" >/dev/null
qemu-img snapshot -c s2 "$img"
qemu-io -f qcow2 -c "write -P 0xc4 0 128k" -c "discard $((5 * M)) 64k" "$img" >/dev/null
sha_before=$(sha256sum < "$img")

# snapshot_ref WHICH: the reference for a snapshot (or "active") in
# $tmp/ref.raw, and the map of the same state by qemu-img in $tmp/ref.map.
snapshot_ref ()
{
  cp "$img" "$tmp/ref.qcow2"
  [ "$1" = active ] || qemu-img snapshot -a "$1" "$tmp/ref.qcow2"
  qemu-img convert -O raw "$tmp/ref.qcow2" "$tmp/ref.raw"
  qemu-img map -f qcow2 --output=json "$tmp/ref.qcow2" > "$tmp/ref.map"
}

# check WHICH SIZE [PLUGIN-ARGS...]: the export's size, bytes (by
# checksum) and extents are the reference's; qemount-read agrees.
check ()
{
  local which=$1 size=$2 got
  shift 2
  snapshot_ref "$which"
  [ "$(stat -c %s "$tmp/ref.raw")" = "$size" ] ||
    fail "$which: qemu-img's reference is not $size bytes"
  got=$(qemount_nbdkit -r --run 'nbdinfo --size "$uri"' -- file="$img" "$@")
  [ "$got" = "$size" ] || fail "$which: served $got bytes, expected $size"
  qemount_nbdkit -r --run 'nbdcopy "$uri" - | sha256sum' -- file="$img" "$@" \
    > "$tmp/got.sum"
  [ "$(cat "$tmp/got.sum")" = "$(sha256sum < "$tmp/ref.raw")" ] ||
    fail "$which: the bytes served differ from the snapshot qemu-img reverted to"
  export ref_map="$tmp/ref.map" ref_raw="$tmp/ref.raw"
  qemount_nbdkit -r --run "$PYTHON $top_srcdir/tests/nbd-check.py extents \"\$uri\" \"\$ref_raw\" --qemu-map \"\$ref_map\"" -- \
    file="$img" "$@" </dev/null || fail "$which: extents differ from qemu-img map"
  if [ "$which" != active ]; then
    qemount_read -s "$which" "$img" | cmp - "$tmp/ref.raw" ||
      fail "$which: qemount-read differs"
  fi
}

check s1 $((4 * M)) snapshot=s1
check s2 $((6 * M)) snapshot=s2
check s1 $((4 * M)) snapshot=1          # by id
check active $((6 * M))

# qemu-img convert -l reads the snapshot at today's size: the snapshot's
# bytes, then zeros.
qemu-img convert -l snapshot.name=s1 -O raw "$img" "$tmp/convert-l.raw"
snapshot_ref s1
cmp -n $((4 * M)) "$tmp/convert-l.raw" "$tmp/ref.raw" ||
  fail "s1 differs from qemu-img convert -l"
[ "$(tail -c +$((4 * M + 1)) "$tmp/convert-l.raw" | tr -d '\0' | wc -c)" = 0 ] ||
  fail "qemu-img convert -l has data past s1's size"

# Read-only: writes are refused, even by a writable nbdkit; with
# overlay= they go to the overlay.  The image is never written.
cat > "$tmp/write.py" <<'EOF'
import errno, sys, nbd
h = nbd.NBD()
h.set_strict_mode(0)            # send the write anyway: the server decides
h.connect_uri(sys.argv[1])
if sys.argv[2] == "refused":
    assert h.is_read_only(), "a snapshot export is writable"
    try:
        h.pwrite(b"x" * 512, 0)
        sys.exit("the write to the snapshot succeeded")
    except nbd.Error as e:
        # nbdkit refuses it with EROFS, which NBD sends as EPERM.
        assert e.errnum == errno.EPERM, "write failed with %s, not EPERM" % e
else:
    h.pwrite(b"x" * 512, 0)
    assert h.pread(512, 0) == b"x" * 512
EOF
qemount_nbdkit --run "$PYTHON $tmp/write.py \"\$uri\" refused" -- file="$img" snapshot=s1 \
  2>"$tmp/err" || { cat "$tmp/err" >&2; fail "a write to a snapshot was not refused"; }
grep -qF "write request on readonly connection" "$tmp/err" ||
  { cat "$tmp/err" >&2; fail "nbdkit did not refuse the write as read-only (EROFS)"; }
qemount_nbdkit --run "$PYTHON $tmp/write.py \"\$uri\" written" -- \
  file="$img" snapshot=s1 overlay="$tmp/s1.ovl" || fail "overlay=: the write failed"
[ "$(sha256sum < "$img")" = "$sha_before" ] || fail "the image was written"

# Unknown names: the message lists the snapshots; other formats refuse.
qemu-img convert -O raw "$img" "$tmp/plain.raw"
qemu-img convert -O vdi "$img" "$tmp/plain.vdi"
for args in "snap.qcow2 nope|no snapshot called 'nope' (it has 's1' (id 1), 's2' (id 2))" \
            "plain.raw s1|plain.raw: raw images have no internal snapshots" \
            "plain.vdi s1|plain.vdi: vdi images have no internal snapshots"; do
  set -- ${args%%|*}
  msg=${args#*|}
  status=0
  qemount_nbdkit -r --run true -- file="$tmp/$1" snapshot="$2" 2>"$tmp/err" || status=$?
  [ "$status" = 1 ] || { cat "$tmp/err" >&2; fail "nbdkit $1 snapshot=$2: exit $status, expected 1"; }
  grep -qF -- "$msg" "$tmp/err" || { cat "$tmp/err" >&2; fail "nbdkit $1 snapshot=$2: no '$msg'"; }
  expect 18 "$msg" qemount info --snapshot "$2" "$tmp/$1"
  expect 18 "$msg" qemount mount --raw --snapshot "$2" "$tmp/$1" "$tmp"
done
expect 2 "--rw with --snapshot needs --overlay PATH" \
  qemount mount --rw --snapshot s1 "$img" "$tmp"
# A backing file is read in its active state, not refused.
qemu-img create -q -f qcow2 -b snap.qcow2 -F qcow2 "$tmp/top.qcow2"
qemu-img snapshot -c t1 "$tmp/top.qcow2"
check_top=$(qemount_nbdkit -r --run 'nbdcopy "$uri" - | sha256sum' -- file="$tmp/top.qcow2" snapshot=t1)
[ "$check_top" = "$(sha256sum < "$tmp/plain.raw")" ] ||
  fail "a snapshot over a backing file differs from the backing file"

# qemount info: the table as qemu-img info has it, and each size.
qemount info --json "$img" > "$tmp/info.json" || fail "info --json failed"
qemu-img info --output=json "$img" |
  jq -c '[.snapshots[] | {id, name, date: (."date-sec" | todate),
                          vm_state_size: ."vm-state-size"}]' > "$tmp/want"
jq -c '[.snapshots[] | {id, name, date, vm_state_size}]' "$tmp/info.json" > "$tmp/got"
cmp -s "$tmp/want" "$tmp/got" ||
  fail "info --json snapshots: $(cat "$tmp/got"), qemu-img info: $(cat "$tmp/want")"
jq -e "[.snapshots[].virtual_size] == [$((4 * M)), $((6 * M))] and
       ([.snapshots[].served] | any | not) and .virtual_size == $((6 * M))" \
  "$tmp/info.json" >/dev/null || fail "info --json: wrong sizes"
qemount info --json --snapshot s1 "$img" |
  jq -e ".virtual_size == $((4 * M)) and [.snapshots[].served] == [true, false]" >/dev/null ||
  fail "info --json --snapshot s1: not the snapshot's size, or not marked"
qemount info --json "$tmp/plain.raw" | jq -e '.snapshots == []' >/dev/null ||
  fail "info --json of a raw image: snapshots is not []"
qemount info "$img" > "$tmp/info.txt" || fail "info failed"
date1=$(jq -r '.snapshots[0].date | sub("T"; " ") | sub("Z"; "")' "$tmp/info.json")
grep -qE '^snapshots: +2 \(the active state is shown here\)$' "$tmp/info.txt" &&
  grep -qE "^  1   s1           4 MiB           0 B  $date1\$" "$tmp/info.txt" &&
  grep -qE '^  2   s2           6 MiB           0 B  ' "$tmp/info.txt" ||
  { cat "$tmp/info.txt" >&2; fail "info does not list the snapshots"; }
qemount info --snapshot s2 "$img" | grep -qE '^  2 .*\(shown here\)$' ||
  fail "info --snapshot s2 does not mark it"

# The files of then: an ext4 whose files changed after s1, mounted.
if [ "$(id -u)" = 0 ] && [ -c /dev/loop-control ] && [ -c /dev/fuse ] &&
   command -v nbdfuse >/dev/null && command -v mkfs.ext4 >/dev/null; then
  snapshotted_ext4 16M make_tree manifest
  mkdir "$tmp/mnt"
  for which in s1 active; do
    opts=(); [ "$which" = active ] || opts=(--snapshot "$which")
    qemount mount --via kernel "${opts[@]}" "$tmp/fs.qcow2" "$tmp/mnt" ||
      fail "mount ${opts[*]} failed"
    manifest "$tmp/mnt" > "$tmp/got.manifest"
    qemount list --json | jq -e --arg s "${opts[1]:-}" \
      '.[0].snapshot == (if $s == "" then null else $s end)' >/dev/null ||
      fail "list --json: not snapshot ${opts[1]:-null}"
    if [ "$which" = s1 ]; then
      qemount list | grep -qF "$tmp/fs.qcow2 snapshot s1" ||
        fail "list does not show snapshot s1"
    fi
    qemount umount "$tmp/mnt" || fail "umount failed"
    want=$([ "$which" = s1 ] && echo t1 || echo t2)
    diff -u "$tmp/$want.manifest" "$tmp/got.manifest" ||
      fail "mount ${opts[*]}: not the files of $want"
  done
  assert_clean "$tmp/mnt"
else
  echo "SKIP (one case): the ext4 mount needs root, loop devices, FUSE, nbdfuse, mkfs.ext4"
fi
