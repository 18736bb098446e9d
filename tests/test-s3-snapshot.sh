#!/usr/bin/env bash
# SPDX-License-Identifier: BSD-3-Clause
# qemount snapshot create and commit --thin into S3 (s3rver behind
# tests/s3-verify-proxy.py, which checks every signature): the snapshot
# goes up in parts and reads back through nbdkit as the image it was
# made from, a part refused with 503 sent again; a thin one names its
# parent in the bucket relative to it.
# A wrong secret is refused with the URL and S3's code, exit status 1,
# and leaves nothing; SIGTERM during the upload aborts it: no object,
# no pending upload, death by the signal.  The keys never show in a
# message or in ps.
source ./tests/functions.sh
source "$top_srcdir/tests/remote-functions.sh"
requires nbdkit
requires nbdcopy
requires curl
requires jq
$PYTHON -c 'import nbd' 2>/dev/null || skip "python3-libnbd is not installed"
s3_start
export tmp top_srcdir PYTHON
qemount="$top_builddir/server/qemount"

# s3_get ?QUERY|/KEY [CURL-OPTIONS]: a signed request for the bucket or a key.
s3_get ()
{
  curl -s --aws-sigv4 aws:amz:us-east-1:s3 -u S3RVER:S3RVER \
    -H 'x-amz-content-sha256: UNSIGNED-PAYLOAD' "$AWS_ENDPOINT_URL/bkt$1" "${@:2}"
}
# absent KEY: no object KEY and no upload of it pending.
absent ()
{
  s3_get "/$1" -o /dev/null -w '%{http_code}\n' -I > "$tmp/code"
  [ "$(cat "$tmp/code")" = 404 ] || fail "s3://bkt/$1 is there (HTTP $(cat "$tmp/code"))"
  s3_get "?uploads=" > "$tmp/uploads"
  grep -q "<ListMultipartUploadsResult>" "$tmp/uploads" ||
    fail "ListMultipartUploads: $(cat "$tmp/uploads")"
  ! grep -qF "<Key>$1</Key>" "$tmp/uploads" ||
    fail "an upload of s3://bkt/$1 is left pending"
}
reads_as ()                     # reads_as URL EXPECTED
{
  rm -f "$tmp/out"
  out="$tmp/out" qemount_nbdkit -r --run 'nbdcopy "$uri" "$out"' -- \
    file="$1" </dev/null 2>"$tmp/err" || { cat "$tmp/err" >&2; fail "$1: cannot read"; }
  [ "$(sha256sum < "$tmp/out")" = "$(sha256sum < "$2")" ] ||
    fail "$1 does not read as $2"
}

cd "$tmp"
# 18 MiB that do not compress: a snapshot of three 8 MiB parts.
head -c 18M /dev/urandom > disk.raw
truncate -s 24M disk.raw

"$qemount" snapshot create --block-size 64K disk.raw s3://bkt/snaps/base.qsnap \
  >out 2>err || { cat err >&2; fail "create to S3 failed"; }
grep -q "^disk.raw -> s3://bkt/snaps/base.qsnap: 24 MiB in" out ||
  fail "create: no summary line: $(cat out)"
grep -q "^PUT /bkt/snaps/base.qsnap?partNumber=3&uploadId=.* 200$" s3-proxy.log ||
  fail "create: not uploaded in three parts"
reads_as s3://bkt/snaps/base.qsnap disk.raw

# A part refused with S3's 503 SlowDown is sent again.
touch s3-fail
"$qemount" snapshot create --block-size 64K disk.raw s3://bkt/snaps/again.qsnap \
  >out 2>err || { cat err >&2; fail "create with a 503: failed"; }
[ ! -e s3-fail ] || fail "create with a 503: part 2 was not refused"
grep -q "^PUT /bkt/snaps/again.qsnap?partNumber=2&uploadId=.* 200$" s3-proxy.log ||
  fail "create with a 503: part 2 was not sent again"
reads_as s3://bkt/snaps/again.qsnap disk.raw

# Changes written through the plugin's overlay on the snapshot in S3,
# committed thin next to it: only the changes go up, the rest is read
# from base.qsnap, found by its name relative to next.qsnap.
qemount_nbdkit --run '$PYTHON $top_srcdir/tests/overlay-check.py "$uri" disk.raw model --seed 3' \
  -- file=s3://bkt/snaps/base.qsnap overlay=ovl </dev/null >/dev/null ||
  fail "writes through the overlay failed"
"$qemount" snapshot commit --base s3://bkt/snaps/base.qsnap --overlay ovl \
  --output s3://bkt/snaps/next.qsnap --thin >out 2>err ||
  { cat err >&2; fail "commit --thin to S3 failed"; }
reads_as s3://bkt/snaps/next.qsnap model
base_id=$("$qemount" snapshot info --json s3://bkt/snaps/base.qsnap | jq -r .file_id)
"$qemount" snapshot info --json s3://bkt/snaps/next.qsnap | jq -e --arg id "$base_id" \
  '.parent == {"path": "base.qsnap", "id": $id} and .blocks.parent > 0' >/dev/null ||
  fail "next.qsnap does not name base.qsnap as its parent"
"$qemount" snapshot commit --base s3://bkt/snaps/base.qsnap --overlay ovl \
  --output s3://other/next.qsnap --thin >out 2>err && fail "a parent in another bucket"
grep -qF "s3://other/next.qsnap: a thin snapshot's parent must be where it is (a local file, or in the same S3 bucket), not s3://bkt/snaps/base.qsnap" err ||
  { cat err >&2; fail "a parent in another bucket: no message"; }

# Not over one of its own inputs, in S3 as on disk.
"$qemount" snapshot commit --base s3://bkt/snaps/base.qsnap --overlay ovl \
  --output s3://bkt/snaps/base.qsnap --thin >out 2>err && fail "commit over its base"
grep -qF "s3://bkt/snaps/base.qsnap: the output is one of the files it is made from" err ||
  { cat err >&2; fail "commit over its base: no message"; }

# A wrong secret: refused at the start, nothing left.
status=0
AWS_SECRET_ACCESS_KEY=s3cr3t "$qemount" snapshot create disk.raw \
  s3://bkt/snaps/bad.qsnap >out 2>err || status=$?
[ "$status" = 1 ] || { cat err >&2; fail "wrong secret: exit status $status, not 1"; }
grep -qF "s3://bkt/snaps/bad.qsnap: upload refused: SignatureDoesNotMatch (403)" err ||
  { cat err >&2; fail "wrong secret: no message naming the URL and the code"; }
! grep -q "s3cr3t\|S3RVER" err || fail "wrong secret: a key in a message"
absent snaps/bad.qsnap

# SIGTERM while a part is held by the proxy: aborted, nothing left.
touch s3-hold
"$qemount" snapshot create disk.raw s3://bkt/snaps/int.qsnap >out 2>err &
pid=$!
for _ in $(seq 600); do
  [ -e s3-hold.held ] && break
  [ -d "/proc/$pid" ] || break
  sleep 0.05
done
[ -e s3-hold.held ] || { rm -f s3-hold; cat err >&2; fail "interrupt: the upload never started"; }
ps -o args= -p "$pid,$s3proxy_pid,$s3rver_pid" > ps.out
grep -q qemount ps.out || fail "interrupt: ps does not show qemount"
! grep -q S3RVER ps.out || fail "interrupt: a key in ps: $(cat ps.out)"
kill -TERM "$pid"
status=0
wait "$pid" || status=$?
rm -f s3-hold
[ "$status" = $((128 + 15)) ] || { cat err >&2; fail "interrupt: exit status $status, not death by SIGTERM"; }
grep -qF "s3://bkt/snaps/int.qsnap: interrupted" err ||
  { cat err >&2; fail "interrupt: no message"; }
grep -q "^DELETE /bkt/snaps/int.qsnap?uploadId=.* 204$" s3-proxy.log ||
  fail "interrupt: the upload was not aborted"
absent snaps/int.qsnap

echo "PASS: snapshots created and committed into S3, refused and interrupted"
