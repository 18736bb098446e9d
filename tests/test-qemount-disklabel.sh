#!/usr/bin/env bash
# SPDX-License-Identifier: BSD-3-Clause
# BSD disklabels in MBR slices, without the helper VM: qemount info
# lists their partitions as 2a, 2d... with the filesystem in each;
# mount --raw --partition 2a serves exactly that partition's bytes, for
# FreeBSD's offsets relative to the slice and the absolute ones of
# OpenBSD (and old FreeBSD), in a slice past the first 4 MiB too; bad
# labels and entries are skipped with a warning, never used.
source ./tests/qemount-functions.sh
[ -c /dev/fuse ] || skip "no /dev/fuse"
requires makefs
requires python3
requires jq
requires nbdkit
requires nbdfuse
export QEMOUNT_GUEST_DIR="$tmp/no-guest"
mnt="$tmp/mnt"
mkdir "$mnt" "$tmp/t"

echo hello > "$tmp/t/a.txt"
makefs -t ffs -o version=1 -s 4m "$tmp/ufs1.img" "$tmp/t" >/dev/null
head -c 300000 /dev/urandom > "$tmp/d.bin"
mkdisklabel () { python3 "$top_srcdir/scripts/mkdisklabel.py" "$@"; }
# FreeBSD 10 on: c at 0, offsets from the slice (slice 2 at 1 MiB).
mkdisklabel --slice 2 --relative "$tmp/rel.img" a="$tmp/ufs1.img" \
  d="$tmp/d.bin"
# OpenBSD: offsets from the disk, slice 2 at 10 MiB, past what libblkid
# is shown of the disk's start.
mkdisklabel --type a6 --slice 2 --start 20480 "$tmp/abs.img" \
  a="$tmp/ufs1.img" e="$tmp/d.bin"
# FreeBSD before 10: c at the slice's start, offsets from the disk.
mkdisklabel --slice 1 --start 4096 "$tmp/old.img" a="$tmp/ufs1.img"

# info_has IMAGE REGEX: a line of qemount info matches.
info_has ()
{
  qemount info "$1" > "$tmp/info" 2>"$tmp/info.err" ||
    { cat "$tmp/info.err" >&2; fail "qemount info $1 failed"; }
  grep -qE -- "$2" "$tmp/info" ||
    { cat "$tmp/info" >&2; fail "$(basename "$1"): no line like '$2'"; }
}
info_has "$tmp/rel.img" '^ +2a +1\.0 MiB +4 MiB +4\.2BSD +ufs \(44bsd\)$'
info_has "$tmp/rel.img" '^ +2d .* 4\.2BSD +-$'
info_has "$tmp/abs.img" '^ +2 +10 MiB .* OpenBSD +-$'
info_has "$tmp/abs.img" '^ +2a +10\.0 MiB +4 MiB +4\.2BSD +ufs \(44bsd\)$'
info_has "$tmp/old.img" '^ +1a +2\.0 MiB +4 MiB +4\.2BSD +ufs \(44bsd\)$'
! grep -qE '^ +[0-9]c ' "$tmp/info" || fail "c (the raw partition) is listed"
[ ! -s "$tmp/info.err" ] || fail "warnings on a good label: $(cat "$tmp/info.err")"
qemount info --json "$tmp/rel.img" > "$tmp/json"
[ "$(jq -c '[.partitions[] | [.number, .letter, .type, .disklabel]]' "$tmp/json")" = \
  '[[2,null,"0xa5",true],[2,"a","bsd:7",false],[2,"d","bsd:7",false]]' ] ||
  fail "info --json: $(cat "$tmp/json")"

# raw_part IMAGE PART SECTOR COUNT: --raw --partition PART is COUNT
# sectors of IMAGE from SECTOR (where mkdisklabel put it), and qemount
# list names it.
raw_part ()
{
  local image=$1 part=$2 pids
  dd if="$image" of="$tmp/want" bs=512 skip="$3" count="$4" status=none
  qemount mount --raw --partition "$part" "$image" "$mnt" ||
    fail "$(basename "$image") --partition $part: mount failed"
  cmp "$mnt/disk" "$tmp/want" ||
    fail "$(basename "$image") --partition $part: DIR/disk is not sectors $3 to $(($3 + $4)) of the image"
  qemount list | grep -qF "$image partition $part, read-only" ||
    fail "qemount list: $(qemount list)"
  [ "$(qemount list --json | jq -r '.[] | "\(.partition)\(.letter // "")"')" = "$part" ] ||
    fail "qemount list --json: $(qemount list --json)"
  pids=$(mount_pids "$mnt")
  qemount umount "$mnt" || fail "umount failed"
  assert_clean "$mnt" $pids
}
raw_part "$tmp/rel.img" 2a 2064 8192
raw_part "$tmp/rel.img" 2d 10368 586
raw_part "$tmp/abs.img" 2a 20496 8192
raw_part "$tmp/abs.img" 2e 28800 586
raw_part "$tmp/old.img" 1a 4112 8192
# The slice holding the label: --raw only, and never chosen for itself.
raw_part "$tmp/rel.img" 2 2048 8960
expect 8 "partition 2 holds a BSD disklabel: choose one of its partitions (--partition 2a, ...)" \
  qemount extract "$tmp/rel.img" --partition 2 -o "$tmp/x.tar"
expect 7 "there is no partition 2c (c is the raw partition: the whole slice is its number alone)" \
  qemount extract "$tmp/rel.img" --partition 2c -o "$tmp/x.tar"
expect 7 "there is no partition 2b;" \
  qemount mount --raw --partition 2b "$tmp/rel.img" "$mnt"
expect 2 "--partition 2ab: must be a partition number from 1, or a number and a letter" \
  qemount mount --raw --partition 2ab "$tmp/rel.img" "$mnt"
expect 13 "the helper VM is not built" \
  qemount -v extract "$tmp/rel.img" -o "$tmp/x.tar"
grep -qF "partition 2a holds the only filesystem (ufs)" "$tmp/err" ||
  fail "2a is not the one chosen: $(cat "$tmp/err")"
assert_clean "$mnt"

# label IMAGE SLICE_SECTOR [nosum] FIELD=VALUE...: change the label in
# the slice at SLICE_SECTOR (magic, magic2, n: the number of entries;
# LETTER.size, LETTER.offset in sectors), then set its checksum again
# unless nosum.
label ()
{
  python3 - "$@" <<'EOF'
import struct, sys
image, at = sys.argv[1], int(sys.argv[2]) * 512 + 512
with open(image, "r+b") as f:
    f.seek(at)
    l = bytearray(f.read(512))
    fields = {"magic": (0, "<I"), "magic2": (132, "<I"), "n": (138, "<H")}
    for arg in sys.argv[3:]:
        if arg == "nosum":
            continue
        k, v = arg.split("=")
        if "." in k:
            i = ord(k[0]) - ord("a")
            fields[k] = (148 + 16 * i + (4 if k.endswith("offset") else 0), "<I")
        struct.pack_into(fields[k][1], l, fields[k][0], int(v, 0))
    if "nosum" not in sys.argv:
        n = min(struct.unpack_from("<H", l, 138)[0], 22)
        struct.pack_into("<H", l, 136, 0)
        s = 0
        for o in range(0, 148 + 16 * n, 2):
            s ^= struct.unpack_from("<H", l, o)[0]
        struct.pack_into("<H", l, 136, s)
    f.seek(at)
    f.write(l)
EOF
}
# bad NAME WARNING FIELD=VALUE...: a copy of rel.img (or of $src, its
# slice at sector $slice) with the label changed: info warns and exits 0.
bad ()
{
  local name=$1 warning=$2
  shift 2
  cp "${src:-$tmp/rel.img}" "$tmp/$name.img"
  label "$tmp/$name.img" "${slice:-2048}" "$@"
  qemount info "$tmp/$name.img" > "$tmp/info" 2>"$tmp/err" ||
    { cat "$tmp/err" >&2; fail "$name: qemount info failed"; }
  grep -qF -- "qemount: warning: $tmp/$name.img: slice 2: $warning" "$tmp/err" ||
    { cat "$tmp/err" >&2; fail "$name: no warning '$warning'"; }
}
bad magic-start "its disklabel has the magic number at its end only: ignored" magic=0
bad magic-end "its disklabel has the magic number at its start only: ignored" magic2=0
bad huge-n "its disklabel claims 65535 partitions, more than fit in its sector (22): ignored" n=65535
bad sum "its disklabel's checksum is wrong: ignored" nosum d.size=1
for name in magic-start magic-end huge-n sum; do
  qemount info "$tmp/$name.img" 2>/dev/null | grep -qE '^ +2[a-z] ' &&
    fail "$name: a partition of a refused label is listed"
done
expect 7 "there is no partition 2a;" \
  qemount mount --raw --partition 2a "$tmp/sum.img" "$mnt"

# Bad entries: skipped one by one, the good ones still listed.
# Past the end of the slice (at 29440) read either way, inside the disk.
src=$tmp/abs.img slice=20480 \
  bad past-slice "disklabel partition 2e (sectors 30000 to 30585) is outside the slice: skipped" \
  e.offset=30000
grep -qE '^ +2a .* ufs \(44bsd\)$' "$tmp/info" || fail "past-slice: 2a is gone"
! grep -qE '^ +2e ' "$tmp/info" || fail "past-slice: 2e is listed"
bad past-disk "disklabel partition 2d (sectors 4294969343 to 8589936637) is outside the disk: skipped" \
  d.offset=0xffffffff d.size=0xffffffff
bad long "disklabel partition 2d (sectors 10368 to 4294977662) is outside the disk: skipped" \
  d.size=0xffffffff
expect 7 "there is no partition 2e;" \
  qemount mount --raw --partition 2e "$tmp/past-slice.img" "$mnt"
# Partition a may take the whole slice.
cp "$tmp/rel.img" "$tmp/whole-a.img"
label "$tmp/whole-a.img" 2048 a.offset=0 a.size=8960
info_has "$tmp/whole-a.img" '^ +2a +1 MiB +4\.4 MiB +4\.2BSD '
# An entry that is the whole disk (NetBSD's d) is not listed, silently.
disk_sectors=$(( $(stat -c %s "$tmp/abs.img") / 512 ))
cp "$tmp/abs.img" "$tmp/whole.img"
label "$tmp/whole.img" 20480 d.offset=0 d.size=$disk_sectors n=16
qemount info "$tmp/whole.img" > "$tmp/info" 2>"$tmp/err"
[ ! -s "$tmp/err" ] || fail "whole disk entry: $(cat "$tmp/err")"
! grep -qE '^ +2d ' "$tmp/info" || fail "the whole disk is listed as 2d"
assert_clean "$mnt"
