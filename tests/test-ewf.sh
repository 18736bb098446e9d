#!/usr/bin/env bash
# SPDX-License-Identifier: BSD-3-Clause
# EWF (E01) beyond what the manifest tests cover: every image against
# ewfexport (libewf's own tool, a second reader besides the raw source),
# qemount info --verify (a good image, one with a corrupt chunk, one
# whose stored MD5 was changed, a raw image), a corrupt chunk read
# through nbdkit, a missing segment, a segment in another directory, the
# second segment named instead of the first, truncated and mutated
# images, and the extents.
source ./tests/qemount-functions.sh
requires nbdkit
requires nbdcopy
requires nbdinfo
requires ewfexport
images_manifest >/dev/null
ewf="$IMAGES/ewf"

succeeds ()                     # succeeds COMMAND...: output in $tmp/out
{
  "$@" >"$tmp/out" 2>"$tmp/err" || { cat "$tmp/err" >&2; fail "$*: failed"; }
}

# ewfexport as the second reader of every EWF image of the manifest.
count=0
while read -r image format expected; do
  [ "$format" = ewf ] || continue
  ewfexport -q -u -f raw -t "$tmp/export" "$IMAGES/$image" >/dev/null 2>&1 ||
    fail "$image: ewfexport failed"
  qemount_read "$IMAGES/$image" | cmp - "$tmp/export.raw" ||
    fail "$image: qemount-read output differs from ewfexport's"
  rm -f "$tmp/export.raw" "$tmp/export.raw.info"
  count=$((count + 1))
done < <(images_manifest)
[ "$count" -ge 8 ] || fail "only $count EWF images in the manifest"

# --verify on good images: the stored hashes are the sources'.
md5=$(md5sum < "$ewf/best.E01.expected.raw" | cut -d' ' -f1)
succeeds qemount info --verify "$ewf/best.E01"
grep -q "^verify: *MD5 matches ($md5)\$" "$tmp/out" ||
  { cat "$tmp/out" >&2; fail "best.E01: no 'verify: MD5 matches ($md5)'"; }
sha1=$(sha1sum < "$ewf/ewfx.e01.expected.raw" | cut -d' ' -f1)
succeeds qemount info --verify "$ewf/ewfx.e01"
grep -q "verify: *MD5 matches (.*), SHA1 matches ($sha1)\$" "$tmp/out" ||
  { cat "$tmp/out" >&2; fail "ewfx.e01: SHA1 not verified"; }
succeeds qemount info --verify --json "$ewf/multi.E01"
$PYTHON - "$tmp/out" "$md5" <<'PY' || fail "multi.E01: wrong verify member in --json"
import json, sys
v = json.load(open(sys.argv[1]))["verify"]
assert v["read_bytes"] > 0, v
assert [(h["algorithm"], h["value"], h["matches"]) for h in v["hashes"]] == \
    [("MD5", sys.argv[2], True)], v
PY
succeeds qemount info --verify "$IMAGES/src/tiny.raw"
grep -q "^verify: *no stored hash (raw images have none); all 2.5 KiB read without error\$" "$tmp/out" ||
  { cat "$tmp/out" >&2; fail "raw: no 'no stored hash'"; }

# A byte flipped inside a stored (uncompressed) chunk: reads of it fail,
# through the image layer, nbdkit and --verify, naming the chunk.
read -r offset chunk < <($PYTHON - "$ewf/none.E01" "$ewf/none.E01.expected.raw" <<'PY'
import sys
image, source = (open(p, "rb").read() for p in sys.argv[1:3])
for at in range(200000, len(source) - 64, 4096):
    window = source[at:at + 64]
    if len(set(window)) > 32 and image.count(window) == 1:
        print(image.find(window), at // 32768 * 32768)
        break
PY
) && [ -n "$chunk" ] || fail "no source bytes found in none.E01"
cp "$ewf/none.E01" "$tmp/flipped.E01"
printf '\xff' | dd of="$tmp/flipped.E01" bs=1 seek="$offset" conv=notrunc status=none
corrupt="the EWF chunk at offset $chunk (32768 bytes) is corrupt: it fails its checksum or cannot be read"
expect 6 "flipped.E01: $corrupt" qemount info --verify "$tmp/flipped.E01"
[ ! -s "$tmp/out" ] || fail "flipped.E01: info printed despite the failed verify"
expect_read_failure "flipped.E01" "flipped.E01: $corrupt" "$tmp/flipped.E01"
qemount_nbdkit -r --run 'nbdcopy "$uri" null:' -- file="$tmp/flipped.E01" \
  </dev/null 2>"$tmp/err" && fail "flipped.E01: nbdcopy read the corrupt chunk"
grep -qF "$corrupt" "$tmp/err" ||
  { cat "$tmp/err" >&2; fail "flipped.E01: nbdkit did not name the chunk"; }
# Reading the chunk again (now in libewf's cache, which does not record
# the error twice) fails again.
qemount_nbdkit -r --run "$PYTHON -c '
import nbd, sys
h = nbd.NBD()
h.connect_uri(sys.argv[1])
for i in range(3):
    try:
        h.pread(4096, int(sys.argv[2]) + 4096 * i)
        sys.exit(\"read %d of the corrupt chunk succeeded\" % i)
    except nbd.Error:
        pass
' \"\$uri\" $chunk" -- file="$tmp/flipped.E01" </dev/null 2>"$tmp/err" ||
  { cat "$tmp/err" >&2; fail "flipped.E01: a second read of the chunk succeeded"; }

# The stored MD5 changed (its section's Adler-32 fixed so libewf takes
# it): --verify names both hashes.
$PYTHON - "$ewf/best.E01" "$tmp/md5.E01" "$md5" <<'PY' || fail "cannot patch the MD5"
import struct, sys, zlib
data = bytearray(open(sys.argv[1], "rb").read())
at = data.index(bytes.fromhex(sys.argv[3]))
data[at] ^= 0x01
struct.pack_into("<I", data, at + 32, zlib.adler32(bytes(data[at:at + 32])))
open(sys.argv[2], "wb").write(data)
PY
wrong=$(printf '%02x' $((0x${md5:0:2} ^ 1)))${md5:2}
expect 6 "md5.E01: the image is corrupt: the MD5 hash stored in it is $wrong, the disk's is $md5" \
  qemount info --verify "$tmp/md5.E01"
succeeds qemount info "$tmp/md5.E01"       # without --verify: fine

# A missing segment (E02 of 35): refused at open, by the plugin too.
mkdir "$tmp/set" "$tmp/other"
cp "$ewf"/multi.E?? "$tmp/set/"   # copies: nbdkit resolves symbolic links
rm "$tmp/set/multi.E02"
expect 6 "multi.E01: the EWF segment files are incomplete or damaged (1 found, $tmp/set/multi.E01 to $tmp/set/multi.E01): is a segment file missing?" \
  qemount info "$tmp/set/multi.E01"
qemount_nbdkit -r --run 'nbdinfo "$uri"' -- file="$tmp/set/multi.E01" </dev/null \
  2>"$tmp/err" && fail "nbdkit served multi.E01 without its E02"
grep -qF "incomplete or damaged" "$tmp/err" ||
  { cat "$tmp/err" >&2; fail "nbdkit: no message for the missing segment"; }

# A segment that resolves to another directory: refused under the
# default policy (and backing=no), read with backing=yes.
cp "$ewf/multi.E02" "$tmp/other/multi.E02"
ln -s "$tmp/other/multi.E02" "$tmp/set/multi.E02"
expect 6 "multi.E01: segment file 'multi.E02' is outside the image's directory" \
  qemount info "$tmp/set/multi.E01"
expect 6 "outside the image's directory" \
  qemount info --backing no "$tmp/set/multi.E01"
succeeds qemount info --verify --backing yes "$tmp/set/multi.E01"
grep -q "MD5 matches ($md5)" "$tmp/out" || fail "backing=yes: not verified"

# The second segment named: the first is asked for.
expect 6 "multi.E02: this is segment 2 of an EWF image: name its first segment file" \
  qemount info "$ewf/multi.E02"

# Truncated images: refused at open, naming the file (the header cut
# short, the tables, the chunks or only the final sections missing).
size=$(stat -c %s "$ewf/best.E01")
for cut in 100 4000 $((size / 2)) $((size - 200)); do
  head -c "$cut" "$ewf/best.E01" > "$tmp/cut.E01"
  expect 6 "$tmp/cut.E01: " qemount info "$tmp/cut.E01"
  expect_read_failure "best.E01 cut at $cut bytes" "$tmp/cut.E01: " "$tmp/cut.E01"
done

# Hostile bytes: 300 copies of tiny.E01 (the header, section and table
# descriptors are in its first and last KiB) each with a few bytes
# changed there, after the signature (without it the file is raw), read
# either exactly or not at all, with a message that names the file,
# never by a crash.
$PYTHON - "$ewf/tiny.E01" "$tmp/mutant.E01" "$tmp/mutants" <<'PY'
import os, random, sys
data = open(sys.argv[1], "rb").read()
random.seed(14)
os.mkdir(sys.argv[3])
for n in range(300):
    d = bytearray(data)
    for _ in range(random.randint(1, 4)):
        at = random.randrange(8, 1024) if random.random() < 0.6 \
            else random.randrange(max(0, len(d) - 1024), len(d))
        d[at] = random.randrange(256)
    open("%s/%03d.E01" % (sys.argv[3], n), "wb").write(d)
PY
accepted=0
for m in "$tmp"/mutants/*.E01; do
  status=0
  qemount_read "$m" > "$tmp/mutant.raw" 2>"$tmp/err" || status=$?
  if [ "$status" = 0 ]; then
    cmp -s "$tmp/mutant.raw" "$ewf/tiny.E01.expected.raw" ||
      fail "$(basename "$m"): read without error, but its bytes differ"
    accepted=$((accepted + 1))
  else
    [ "$status" -lt 128 ] && [ "$status" != 99 ] ||
      { cat "$tmp/err" >&2; fail "$(basename "$m"): exit status $status"; }
    grep -qF "$m: " "$tmp/err" ||
      { cat "$tmp/err" >&2; fail "$(basename "$m"): the error does not name the file"; }
  fi
done
echo "mutants: $accepted of 300 read exactly, the others refused with a message"

# Served by the plugin: the size, the data, the extents (all data).
qemount_nbdkit -r --run 'nbdinfo --map "$uri"' -- file="$ewf/fast.E01" \
  </dev/null >"$tmp/map" 2>"$tmp/err" || { cat "$tmp/err" >&2; fail "nbdinfo --map failed"; }
size=$(stat -c %s "$ewf/fast.E01.expected.raw")
[ "$(awk '{print $1, $2, $3, $4}' "$tmp/map")" = "0 $size 0 data" ] ||
  { cat "$tmp/map" >&2; fail "fast.E01: extents are not one data extent"; }

echo "PASS: EWF: $count images equal ewfexport's reading, --verify, corrupt and incomplete images"
