#!/usr/bin/env bash
# SPDX-License-Identifier: BSD-3-Clause
# Overlay + commit: writes through the plugin's overlay, committed in
# full and thin, read back as the written state (every stream); the thin
# snapshot is smaller, names its parent by relative path and id, and a
# chain of thin snapshots reads right; base and overlay stay untouched;
# a wrong parent and bad commits are refused with clear errors.
source ./tests/functions.sh
requires nbdkit
requires nbdcopy
requires jq
$PYTHON -c 'import nbd' 2>/dev/null || skip "python3-libnbd is not installed"
images_manifest >/dev/null
: "${QSNAP_TOOL:=$top_builddir/tests/qsnap-tool}"
qsnap () { env $QEMOUNT_READ_ENV "$QSNAP_TOOL" "$@"; }

export tmp top_srcdir PYTHON
write_through ()                # write_through INITIAL MODEL-OUT SEED PLUGIN-ARGS...
{
  local initial=$1 model=$2 seed=$3; shift 3
  qemount_nbdkit --run "\$PYTHON \$top_srcdir/tests/overlay-check.py \"\$uri\" $initial $model --seed $seed" -- \
    "$@" </dev/null >/dev/null || fail "$*: writes through the overlay failed"
}
reads_as ()                     # reads_as QSNAP EXPECTED [EXPORT]
{
  rm -f "$tmp/out"
  qemount_nbdkit -r --run "nbdcopy 'nbd+unix:///${3:-}?socket='\"\$unixsocket\" $tmp/out" -- \
    file="$1" </dev/null 2>"$tmp/err" || { cat "$tmp/err" >&2; fail "$1: cannot read ${3:-}"; }
  cmp -s "$tmp/out" "$2" || fail "$1 ${3:-}: does not read as $2"
}

mkdir "$tmp/d"
cd "$tmp/d"
cp "$IMAGES/src/mixed.raw" base.raw
head -c 2000000 /dev/urandom > mem.raw
qsnap create --block-size 64K base.raw base.qsnap --stream memory=mem.raw >/dev/null
write_through base.raw model 1 file=base.qsnap overlay=ovl
sums=$(sha256sum base.qsnap ovl)

qsnap commit --base base.qsnap --overlay ovl --output full.qsnap > out ||
  fail "full commit failed"
grep -q "^ovl -> full.qsnap: .* in, .* out, ratio" out || fail "commit: no summary line"
qsnap commit --base base.qsnap --overlay ovl --output thin.qsnap --thin >/dev/null ||
  fail "thin commit failed"
[ "$(sha256sum base.qsnap ovl)" = "$sums" ] || fail "commit modified the base or the overlay"
for f in full thin; do
  reads_as $f.qsnap model
  reads_as $f.qsnap model disk
  reads_as $f.qsnap mem.raw memory
  qemount_read $f.qsnap | cmp -s - model || fail "$f: qemount-read differs from the written state"
  qsnap verify $f.qsnap >/dev/null || fail "$f: verify fails"
done

full_size=$(stat -c %s full.qsnap) thin_size=$(stat -c %s thin.qsnap)
[ "$thin_size" -lt $((full_size / 2)) ] || fail "thin ($thin_size) is not much smaller than full ($full_size)"
base_id=$(qsnap info --json base.qsnap | jq -r .file_id)
qsnap info --json thin.qsnap | jq -e --arg id "$base_id" '
  .parent == {"path": "base.qsnap", "id": $id} and .block_size == 65536 and
  .blocks.parent > 0 and
  (.streams[] | select(.name == "memory") | .blocks.parent == .blocks.zero + .blocks.raw + .blocks.lz4 + .blocks.zstd + .blocks.parent)' >/dev/null ||
  { qsnap info --json thin.qsnap >&2; fail "thin: parent, block size or kinds wrong"; }
qsnap info --json full.qsnap | jq -e '.parent == null and .blocks.parent == 0' >/dev/null ||
  fail "full: has a parent"

# A chain: a second session on the thin snapshot, committed thin again.
write_through model model2 2 file=thin.qsnap overlay=ovl2
qsnap commit --base thin.qsnap --overlay ovl2 --output thin2.qsnap --thin >/dev/null ||
  fail "thin commit on a thin base failed"
reads_as thin2.qsnap model2
reads_as thin2.qsnap mem.raw memory

# Into another directory: the parent path is relative to the new file.
mkdir sub
qsnap commit --base base.qsnap --overlay ovl --output sub/thin.qsnap --thin >/dev/null
qsnap info --json sub/thin.qsnap | jq -e '.parent.path == "../base.qsnap"' >/dev/null ||
  fail "parent path is not relative to the new file's directory"

# The parent is recognised by id, not by name.
mkdir other
cp thin.qsnap other/
qsnap create --block-size 64K base.raw other/base.qsnap --stream memory=mem.raw >/dev/null
if qemount_read other/thin.qsnap >/dev/null 2>err; then fail "a different parent was accepted"; fi
grep -qF "file id differs" err || { cat err >&2; fail "wrong parent: unclear error"; }
if qsnap verify other/thin.qsnap >/dev/null 2>err; then fail "verify accepts a wrong parent"; fi
grep -qF "file id differs" err || { cat err >&2; fail "verify, wrong parent: unclear error"; }

# Any format as base, committed in full.
write_through base.raw rawmodel 3 file=base.raw overlay=rawovl
qsnap commit --base base.raw --overlay rawovl --output fromraw.qsnap >/dev/null ||
  fail "full commit of a raw base failed"
reads_as fromraw.qsnap rawmodel

# Refused, with one clear message and no output.
refused ()                      # refused MESSAGE ARGS...
{
  local msg=$1 status=0; shift
  qsnap commit "$@" --output bad.qsnap >/dev/null 2>err || status=$?
  [ $status = 1 ] || fail "commit $*: exit status $status"
  grep -qF "$msg" err || { cat err >&2; fail "commit $*: no message '$msg'"; }
  [ ! -e bad.qsnap ] || fail "commit $*: left an output"
}
refused "base.raw: --thin needs a qsnap base" --base base.raw --overlay rawovl --thin
refused "missing.ovl: No such file or directory" --base base.qsnap --overlay missing.ovl
write_through "$IMAGES/src/small.raw" smallmodel 4 file="$IMAGES/src/small.raw" overlay=smallovl
refused "overlay belongs to a different base image" --base base.qsnap --overlay smallovl
refused "a thin snapshot has its parent's block size (65536 bytes)" \
  --base base.qsnap --overlay ovl --thin --block-size 1M
echo "PASS: qsnap commit"
