#!/usr/bin/env bash
# SPDX-License-Identifier: BSD-3-Clause
# qemount snapshot create, info and verify on their own (no reader
# involved): the summary line and nothing else, info --json with the
# documented fields, dedup and zero blocks visible in the counts, each
# codec used as asked, more streams, and usage and input errors.
source ./tests/functions.sh
requires jq
: "${QSNAP_TOOL:=$top_builddir/tests/qsnap-tool}"
qsnap () { env $QEMOUNT_READ_ENV "$QSNAP_TOOL" "$@"; }

$PYTHON "$top_srcdir/tests/qsnap-image.py" "$tmp/img.raw"
size=$(stat -c %s "$tmp/img.raw")

# One summary line on stdout, nothing on stderr when it is not a terminal.
qsnap create "$tmp/img.raw" "$tmp/a.qsnap" >"$tmp/out" 2>"$tmp/err" ||
  { cat "$tmp/err" >&2; fail "create failed"; }
[ ! -s "$tmp/err" ] || { cat "$tmp/err" >&2; fail "create wrote to stderr"; }
[ "$(wc -l < "$tmp/out")" = 1 ] || fail "create printed more than one line"
grep -Eq "^$tmp/img.raw -> $tmp/a.qsnap: [0-9.]+ [KMG]?i?B in, [0-9.]+ [KMG]?i?B out, ratio [0-9.]+:1, [0-9.]+ s$" "$tmp/out" ||
  { cat "$tmp/out" >&2; fail "summary line is not as documented"; }
qsnap verify "$tmp/a.qsnap" >/dev/null || fail "verify fails on a new file"

# info --json: valid JSON with the documented fields and sane figures.
qsnap info --json "$tmp/a.qsnap" > "$tmp/info.json" || fail "info --json failed"
jq -e --argjson size "$size" '
  (keys | contains(["file", "version", "block_size", "codec", "file_id",
    "created", "streams", "blocks", "data_blocks", "stored_blocks",
    "dedup_blocks", "dedup_saved_bytes", "input_bytes", "stored_bytes",
    "file_bytes", "ratio", "parent"])) and
  .version == 1 and .block_size == 1048576 and .codec == "zstd-3" and
  (.file_id | test("^[0-9a-f]{32}$")) and .parent == null and
  .streams == [{"name": "disk", "size": $size, "blocks": .blocks}] and
  .input_bytes == $size and .ratio > 1 and
  (.blocks | keys == ["lz4", "parent", "raw", "zero", "zstd"]) and
  .blocks.lz4 == 0 and .blocks.parent == 0 and .blocks.zstd > 0 and
  .data_blocks == .blocks.raw + .blocks.zstd' "$tmp/info.json" >/dev/null ||
  { cat "$tmp/info.json" >&2; fail "info --json lacks a field or a figure is wrong"; }
[ "$(jq .file_bytes "$tmp/info.json")" = "$(stat -c %s "$tmp/a.qsnap")" ] ||
  fail "info --json: file_bytes is not the file's size"
# lz4's default block is 256 KiB (it gains nothing from bigger ones).
qsnap create --codec lz4 "$tmp/img.raw" "$tmp/l.qsnap" >/dev/null
[ "$(qsnap info --json "$tmp/l.qsnap" | jq .block_size)" = 262144 ] ||
  fail "the default lz4 block size is not 256 KiB"

# Dedup and zeros, at several block sizes: the image repeats 1 MiB
# regions and 4 KiB pieces, and has zero regions.
for bs in 4K 64K 1M; do
  qsnap create --block-size $bs "$tmp/img.raw" "$tmp/b.qsnap" >/dev/null
  qsnap info --json "$tmp/b.qsnap" > "$tmp/info.json"
  jq -e '.stored_blocks < .data_blocks and .dedup_blocks > 0 and
         .dedup_saved_bytes > 0 and .blocks.zero > 0' "$tmp/info.json" >/dev/null ||
    { cat "$tmp/info.json" >&2; fail "block size $bs: no dedup or no zero blocks"; }
  qsnap verify "$tmp/b.qsnap" >/dev/null || fail "block size $bs: verify fails"
done
qsnap info "$tmp/b.qsnap" | grep -Eq '^dedup: +[1-9][0-9]* blocks share stored bytes' ||
  fail "info (text) does not show deduplication"

# Zero blocks take no space: 1 GiB of zeros, 16384 blocks of 64 KiB, is
# a header, 97 index pages and one stream record.
truncate -s 1G "$tmp/zeros.raw"
qsnap create --block-size 64K "$tmp/zeros.raw" "$tmp/z.qsnap" >/dev/null
zsize=$(stat -c %s "$tmp/z.qsnap")
[ "$zsize" = $((4096 + 97 * 4096 + 64)) ] || fail "1 GiB of zeros took $zsize bytes"
qsnap info --json "$tmp/z.qsnap" | jq -e '.blocks.zero == 16384 and .stored_bytes == 0' >/dev/null ||
  fail "zeros: not all blocks are zero blocks"

# Incompressible data is stored raw, never larger than it was (plus
# the index).
head -c $((8 << 20)) /dev/urandom > "$tmp/random.raw"
qsnap create "$tmp/random.raw" "$tmp/r.qsnap" --codec auto --block-size 128K >/dev/null
qsnap info --json "$tmp/r.qsnap" | jq -e '.blocks.raw == 64 and .stored_bytes == 8388608' >/dev/null ||
  fail "random data is not stored raw"

# Each codec as asked; auto keeps whichever is smaller per block.
qsnap create --codec lz4 "$tmp/img.raw" "$tmp/l.qsnap" >/dev/null
qsnap info --json "$tmp/l.qsnap" | jq -e '.codec == "lz4" and .blocks.lz4 > 0 and .blocks.zstd == 0' >/dev/null ||
  fail "--codec lz4 not used"
qsnap create --codec auto --level 1 --jobs 1 "$tmp/img.raw" "$tmp/x.qsnap" >/dev/null
qsnap info --json "$tmp/x.qsnap" | jq -e '.codec == "auto-1" and .blocks.zstd > 0' >/dev/null ||
  fail "--codec auto --level 1 not used"
[ "$(stat -c %s "$tmp/x.qsnap")" -le "$(stat -c %s "$tmp/l.qsnap")" ] ||
  fail "--codec auto is larger than lz4"
qsnap verify "$tmp/l.qsnap" >/dev/null || fail "verify fails on an lz4 file"

# More streams, each with its size.
head -c 1000000 /dev/urandom > "$tmp/mem.raw"
qsnap create "$tmp/img.raw" "$tmp/s.qsnap" --stream memory="$tmp/mem.raw" \
  --stream notes.v1="$IMAGES/src/tiny.raw" >/dev/null
qsnap info --json "$tmp/s.qsnap" |
  jq -e --argjson size "$size" '[.streams[] | [.name, .size]] ==
    [["disk", $size], ["memory", 1000000], ["notes.v1", 2560]]' >/dev/null ||
  fail "streams are not listed with their sizes"
qsnap verify "$tmp/s.qsnap" >/dev/null || fail "verify fails with three streams"

# Usage errors: exit status 2 and the usage on stderr.
usage_error ()
{
  local status=0
  qsnap "$@" >/dev/null 2>"$tmp/err" || status=$?
  [ $status = 2 ] || fail "'$*': exit status $status, expected 2"
  grep -q '^usage: qemount snapshot' "$tmp/err" || fail "'$*': no usage message"
}
usage_error
usage_error frobnicate
usage_error create "$tmp/img.raw"
usage_error create "$tmp/img.raw" "$tmp/c.qsnap" --codec lzma
usage_error create "$tmp/img.raw" "$tmp/c.qsnap" --block-size 3000
usage_error create "$tmp/img.raw" "$tmp/c.qsnap" --block-size 8M
usage_error create "$tmp/img.raw" "$tmp/c.qsnap" --jobs 0
usage_error create "$tmp/img.raw" "$tmp/c.qsnap" --stream memory
usage_error commit --base "$tmp/a.qsnap" --overlay "$tmp/ovl"
usage_error info
usage_error verify "$tmp/a.qsnap" "$tmp/b.qsnap"
for cmd in create commit info verify; do
  qsnap $cmd --help | grep -q "^usage: qemount snapshot $cmd" || fail "$cmd --help"
done
[ ! -e "$tmp/c.qsnap" ] || fail "a usage error left an output file"

# Errors: exit status 1, one message naming the file and the cause.
error ()                        # error MESSAGE ARGS...
{
  local msg=$1 status=0; shift
  qsnap "$@" >/dev/null 2>"$tmp/err" || status=$?
  [ $status = 1 ] || fail "'$*': exit status $status, expected 1"
  grep -qF "$msg" "$tmp/err" || { cat "$tmp/err" >&2; fail "'$*': no message '$msg'"; }
  [ "$(wc -l < "$tmp/err")" = 1 ] || { cat "$tmp/err" >&2; fail "'$*': more than one message"; }
}
error "$tmp/missing.raw: No such file or directory" create "$tmp/missing.raw" "$tmp/c.qsnap"
error "$tmp/nodir/c.qsnap: cannot open its directory" create "$tmp/img.raw" "$tmp/nodir/c.qsnap"
error "invalid stream name 'a/b'" create "$tmp/img.raw" "$tmp/c.qsnap" --stream a/b="$tmp/mem.raw"
error "two streams are called 'disk'" create "$tmp/img.raw" "$tmp/c.qsnap" --stream disk="$tmp/mem.raw"
error "zstd level 99 is out of range" create "$tmp/img.raw" "$tmp/c.qsnap" --level 99
error "the output is one of the files it is made from" create "$tmp/img.raw" "$tmp/img.raw"
error "$tmp/img.raw: not a qsnap file (bad magic)" info "$tmp/img.raw"
error "$tmp/img.raw: not a qsnap file (bad magic)" verify "$tmp/img.raw"
[ ! -e "$tmp/c.qsnap" ] || fail "a failed create left an output file"
[ -z "$(ls "$tmp" | grep '\.tmp\.')" ] || fail "a failed create left a temporary file"
echo "PASS: qsnap create, info and verify"
