#!/usr/bin/env bash
# SPDX-License-Identifier: BSD-3-Clause
# "qemount snapshot verify" and the decoder (the plugin) apply one set of
# rules, lib/qsnap-format.c: on every malformed qsnap file below, both
# refuse it, and on the good ones both accept it.  The files: one per
# rule from the independent writer (tests/mkqsnap.py --list-breaks), the
# damages tests/qsnap-patch.py makes to a file of our own writer, a thin
# snapshot without its parent, and the fuzzing corpus.
#
# The two check at different times.  verify checks a whole file at once:
# header, stream table, every index page and entry of every stream,
# every stored block, and that a thin snapshot's parent opens and is the
# right file.  The decoder checks the header, the stream table and the
# parent when it opens the file (nbdkit opens every stream before it
# serves), but an index page, an entry and its stored bytes only when it
# reads a block of them.  So the decoder's verdict is nbdkit starting and
# then a copy of every export (stream) with --no-extents, which reads
# every block and so reaches every page, entry and stored block that
# verify checks; it accepts a file only if all of that succeeds, with
# the block cache on (the default) and off: the cache is keyed by where
# the stored bytes lie, and an entry pointing at bytes already decoded
# for another entry must still be checked against its own checksum
# (borrowed-bytes).  Damage inside a thin snapshot's parent is left out: verify of
# the child checks only that the parent opens and matches, the parent's
# own verify checks the rest.
source ./tests/functions.sh
requires nbdkit
requires nbdcopy
requires nbdinfo
requires jq
$PYTHON -c 'import zstandard, lz4.block, xxhash' 2>/dev/null ||
  skip "python3-zstandard, python3-lz4 or python3-xxhash is missing"
: "${QSNAP_TOOL:=$top_builddir/tests/qsnap-tool}"
qsnap () { env $QEMOUNT_READ_ENV "$QSNAP_TOOL" "$@"; }
mk () { $PYTHON "$top_srcdir/tests/mkqsnap.py" "$@"; }
patch () { $PYTHON "$top_srcdir/tests/qsnap-patch.py" "$@"; }
export tmp

# Two streams, each with random, zero, repeated and text blocks and a
# partial last block: breaks of an entry land in "memory", which is not
# the default export.
$PYTHON "$top_srcdir/tests/qsnap-image.py" "$tmp/disk.raw" --mib 2
$PYTHON "$top_srcdir/tests/qsnap-image.py" "$tmp/memory.raw" --mib 3 --seed 2 --tail 777
streams=(--stream disk="$tmp/disk.raw" --stream memory="$tmp/memory.raw")
mkdir "$tmp/parent"
mk "$tmp/parent/p.qsnap" "${streams[@]}"
cp "$tmp/disk.raw" "$tmp/changed.raw"
printf 'changed!' | dd of="$tmp/changed.raw" bs=1 seek=100000 conv=notrunc status=none
thin=(--stream disk="$tmp/changed.raw" --stream memory="$tmp/memory.raw"
      --parent "$tmp/parent/p.qsnap"
      --parent-raw disk="$tmp/disk.raw" --parent-raw memory="$tmp/memory.raw")

# verdict: "accepts" or "refuses", from an exit status; a crash or a
# sanitizer report fails the test.
verdict ()                      # verdict WHO FILE STATUS LOG
{
  [ "$3" -lt 128 ] || { cat "$4" >&2; fail "$1 $2: killed by signal $(($3 - 128))"; }
  ! grep -Eq 'Sanitizer|runtime error:' "$4" || { cat "$4" >&2; fail "$1 $2: sanitizer report"; }
  [ "$3" = 0 ] && echo accepts || echo refuses
}

verify_verdict ()               # verify_verdict FILE
{
  local status=0
  qsnap verify "$1" >"$tmp/verify.log" 2>&1 || status=$?
  [ $status -le 1 ] || { cat "$tmp/verify.log" >&2; fail "verify $1: exit status $status"; }
  verdict verify "$1" $status "$tmp/verify.log"
}

# One request at a time: nbdkit 1.32 can abort (raw_send_socket:
# Assertion `sock >= 0') when nbdcopy hangs up on an error while other
# replies are on the way.
decoder_verdict ()              # decoder_verdict FILE: with and without cache
{
  local status cache verdicts=""
  : > "$tmp/decoder.log"
  for cache in 256M 0; do
    status=0
    echo "cache=$cache:" >> "$tmp/decoder.log"
    qemount_nbdkit -r --run '
      nbdinfo --list --json "$uri" | jq -r ".exports[].\"export-name\"" > "$tmp/exports" &&
      [ -s "$tmp/exports" ] || exit 1
      while read -r name; do
        nbdcopy --synchronous --no-extents "nbd+unix:///$name?socket=$unixsocket" null: || exit 1
      done < "$tmp/exports"
    ' -- file="$1" format=qsnap cache=$cache </dev/null >>"$tmp/decoder.log" 2>&1 || status=$?
    verdicts="$verdicts $(verdict decoder "$1" $status "$tmp/decoder.log")"
  done
  case $verdicts in
    " accepts accepts") echo accepts ;;
    " refuses refuses") echo refuses ;;
    *) echo "with cache=256M and cache=0 respectively:$verdicts" ;;
  esac
}

# Every file is tried and every disagreement shown before the test fails.
n=0 wrong=0
agree ()                        # agree FILE accepts|refuses|either
{
  local v d
  v=$(verify_verdict "$1")
  d=$(decoder_verdict "$1")
  n=$((n + 1))
  if [ "$v" != "$d" ]; then
    echo "FAIL: $1: verify $v it, the decoder $d it" >&2
    sed 's/^/  verify: /' "$tmp/verify.log" >&2
    sed 's/^/  decoder: /' "$tmp/decoder.log" >&2
    wrong=$((wrong + 1))
  elif [ "$2" != either ] && [ "$v" != "$2" ]; then
    echo "FAIL: $1: expected both to $2 it, both $v it" >&2
    sed 's/^/  verify: /' "$tmp/verify.log" >&2
    wrong=$((wrong + 1))
  fi
}

agree "$tmp/parent/p.qsnap" accepts
mk "$tmp/parent/thin.qsnap" "${thin[@]}"
agree "$tmp/parent/thin.qsnap" accepts

for rule in $(mk --list-breaks); do
  case $rule in
    parent-id) mk "$tmp/parent/$rule.qsnap" "${thin[@]}" --break $rule ;;
    *) mk "$tmp/parent/$rule.qsnap" "${streams[@]}" --break $rule ;;
  esac
  agree "$tmp/parent/$rule.qsnap" refuses
done

cp "$tmp/parent/thin.qsnap" "$tmp/orphan.qsnap"
agree "$tmp/orphan.qsnap" refuses

# The damages of tests/test-qsnap-corrupt.sh, on our own writer's file.
qsnap create --block-size 64K "$tmp/disk.raw" "$tmp/good.qsnap" \
  --stream memory="$tmp/memory.raw" >/dev/null || fail "create failed"
agree "$tmp/good.qsnap" accepts
size=$(stat -c %s "$tmp/good.qsnap")
for damage in "flip $((4096 + 1000))" "flip-index 30" "version 2" "flip 20" \
              "truncate $((size / 2))" "truncate 2000"; do
  set -- $damage
  f=$tmp/patched-$1-$2.qsnap
  cp "$tmp/good.qsnap" "$f"
  case $1 in
    truncate) truncate -s "$2" "$f" ;;
    *) patch "$f" "$1" "$2" ;;
  esac
  agree "$f" refuses
done

for f in "$top_srcdir"/tests/fuzz/corpus/qsnap/*; do
  [ -f "$f" ] && agree "$f" either
done
[ $wrong = 0 ] || fail "$wrong of $n qsnap files"
echo "PASS: verify and the decoder agree on $n qsnap files"
