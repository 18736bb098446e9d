#!/usr/bin/env bash
# SPDX-License-Identifier: BSD-3-Clause
# Images in S3 (s3rver from npm on 127.0.0.1): a raw image, a qcow2
# chain and a two-extent VMDK decode exactly by s3://BUCKET/KEY, their
# backing file and extents found in the bucket, path- and virtual-host
# style, and through cache-dir=; keys from the environment or the shared
# credentials file; an unknown key or object is an error naming
# s3://BUCKET/KEY and S3's error code, never the secret.
#
# s3rver 3.7.1 checks that a signed request names a known access key
# but does not check Signature V4 signatures themselves: every request
# goes through tests/s3-verify-proxy.py, which does (botocore's signer),
# so a wrong secret is refused as S3 would.
source ./tests/functions.sh
source "$top_srcdir/tests/remote-functions.sh"
requires nbdkit
requires nbdcopy
requires curl
requires qemu-img
requires qemu-io
s3_start

mkdir "$tmp/img"
cd "$tmp/img"
head -c 3M /dev/urandom > disk.raw
qemu-img create -q -f qcow2 base.qcow2 4M
qemu-io -c 'write -P 0x55 0 2M' base.qcow2 >/dev/null
qemu-img create -q -f qcow2 -F qcow2 -b base.qcow2 top.qcow2
qemu-io -c 'write -P 0x66 1M 2M' top.qcow2 >/dev/null
qemu-img convert -O raw top.qcow2 top.qcow2.raw
cp disk.raw disk.raw.raw
head -c 1M /dev/urandom > "disk f1.vmdk"
head -c 2M /dev/urandom > disk-f2.vmdk
cat > disk.vmdk <<'EOF'
# Disk DescriptorFile
version=1
CID=fffffffe
parentCID=ffffffff
createType="twoGbMaxExtentFlat"

RW 2048 FLAT "disk f1.vmdk" 0
RW 4096 FLAT "disk-f2.vmdk" 0

ddb.virtualHWVersion = "4"
ddb.adapterType = "ide"
EOF
cat "disk f1.vmdk" disk-f2.vmdk > disk.vmdk.raw
cd - >/dev/null
for f in disk.raw base.qcow2 top.qcow2 disk.vmdk "disk f1.vmdk" disk-f2.vmdk; do
  s3_put "$tmp/img/$f" "vm/${f// /%20}"
done

for image in disk.raw top.qcow2 disk.vmdk; do
  expected=$tmp/img/$image.raw
  qemount_read "s3://bkt/vm/$image" >"$tmp/out" 2>"$tmp/err" ||
    { cat "$tmp/err" >&2; fail "$image: qemount-read of s3://bkt/vm/$image failed"; }
  cmp -s "$tmp/out" "$expected" || fail "$image: qemount-read differs"
  rm -f "$tmp/copy"
  out="$tmp/copy" qemount_nbdkit -r --run 'nbdcopy "$uri" "$out"' -- \
    file="s3://bkt/vm/$image" connections=3 2>"$tmp/err" </dev/null ||
    { cat "$tmp/err" >&2; fail "$image: nbdkit qemount file=s3://bkt/vm/$image failed"; }
  cmp -s "$tmp/copy" "$expected" || fail "$image: nbdkit qemount differs"
done

# cache-dir=: a chain read twice, the second time (also) from the
# blocks kept, exactly; neither key in the cache.
for run in first second; do
  rm -f "$tmp/copy"
  out="$tmp/copy" qemount_nbdkit -r --run 'nbdcopy "$uri" "$out"' -- \
    file=s3://bkt/vm/top.qcow2 cache-dir="$tmp/cache" 2>"$tmp/err" </dev/null ||
    { cat "$tmp/err" >&2; fail "cache-dir, $run read: nbdkit qemount failed"; }
  cmp -s "$tmp/copy" "$tmp/img/top.qcow2.raw" || fail "cache-dir, $run read: differs"
done
[ "$(find "$tmp/cache" -type f | wc -l)" -gt 1 ] || fail "cache-dir: nothing kept"
! grep -rqa S3RVER "$tmp/cache" || fail "cache-dir: a key in the cache"

# Virtual-host style (BUCKET.ENDPOINT; libcurl takes *.localhost for
# 127.0.0.1).  s3rver takes a bucket from the host name too: on an
# endpoint that names one, virtual-host style asks for bucket bkt.bkt,
# path style for key bkt/vm/disk.raw in bucket bkt.
AWS_ENDPOINT_URL=http://s3.localhost:$s3_port qemount_read s3://bkt/vm/top.qcow2 \
  2>"$tmp/err" | cmp -s - "$tmp/img/top.qcow2.raw" ||
  { cat "$tmp/err" >&2; fail "virtual-host style: data differs"; }
AWS_ENDPOINT_URL=http://bkt.s3.localhost:$s3_port \
  expect_read_failure "virtual-host style" \
  "s3://bkt/vm/disk.raw: opening: HTTP status 404 (NoSuchBucket)" \
  s3://bkt/vm/disk.raw
AWS_ENDPOINT_URL=http://bkt.s3.localhost:$s3_port AWS_S3_FORCE_PATH_STYLE=true \
  expect_read_failure "path style" \
  "s3://bkt/vm/disk.raw: opening: HTTP status 404 (NoSuchKey)" \
  s3://bkt/vm/disk.raw

# Keys from the shared credentials file: the profile AWS_PROFILE names,
# or "default".
cat > "$tmp/credentials" <<'EOF'
# s3rver's test key
[default]
aws_access_key_id = S3RVER
aws_secret_access_key = S3RVER
[other]
aws_access_key_id=UNKNOWN
aws_secret_access_key=s3cr3t-in-file
EOF
unset AWS_ACCESS_KEY_ID AWS_SECRET_ACCESS_KEY
qemount_read s3://bkt/vm/disk.raw 2>"$tmp/err" | cmp -s - "$tmp/img/disk.raw" ||
  { cat "$tmp/err" >&2; fail "credentials file: data differs"; }
AWS_PROFILE=other expect_read_failure "profile other" \
  "s3://bkt/vm/disk.raw: opening: HTTP status 403 (InvalidAccessKeyId)" \
  s3://bkt/vm/disk.raw
! grep -q s3cr3t "$tmp/err" || fail "profile other: the secret in a message"
AWS_PROFILE=nope expect_read_failure "profile nope" \
  "s3://bkt/vm/disk.raw: AWS profile nope is not in $tmp/credentials" \
  s3://bkt/vm/disk.raw
export AWS_ACCESS_KEY_ID=S3RVER AWS_SECRET_ACCESS_KEY=S3RVER

# An unknown key, a missing object: errors naming s3://BUCKET/KEY and
# S3's error code, never the secret or the session token; qemount says
# "unreadable" (4) and "no image" (3) as for HTTP.
AWS_ACCESS_KEY_ID=UNKNOWN AWS_SECRET_ACCESS_KEY=s3cr3t AWS_SESSION_TOKEN=t0ken \
  expect_read_failure "unknown key" \
  "s3://bkt/vm/top.qcow2: opening: HTTP status 403 (InvalidAccessKeyId)" \
  s3://bkt/vm/top.qcow2
! grep -qE 's3cr3t|t0ken' "$tmp/err" || fail "unknown key: a secret in a message"
AWS_SECRET_ACCESS_KEY=s3cr3t expect_read_failure "wrong secret" \
  "s3://bkt/vm/top.qcow2: opening: HTTP status 403 (SignatureDoesNotMatch)" \
  s3://bkt/vm/top.qcow2
! grep -q 's3cr3t' "$tmp/err" || fail "wrong secret: the secret in a message"
expect_read_failure "missing object" \
  "s3://bkt/vm/nope.qcow2: opening: HTTP status 404 (NoSuchKey)" \
  s3://bkt/vm/nope.qcow2
status=0
AWS_ACCESS_KEY_ID=UNKNOWN "$top_builddir/server/qemount" info s3://bkt/vm/top.qcow2 \
  >/dev/null 2>"$tmp/err" || status=$?
[ "$status" = 4 ] || { cat "$tmp/err" >&2; fail "qemount info, unknown key: exit status $status, not 4"; }
grep -qF "s3://bkt/vm/top.qcow2: opening: HTTP status 403 (InvalidAccessKeyId)" "$tmp/err" ||
  { cat "$tmp/err" >&2; fail "qemount info, unknown key: no message"; }
status=0
"$top_builddir/server/qemount" info s3://bkt/vm/nope.qcow2 >/dev/null 2>"$tmp/err" || status=$?
[ "$status" = 3 ] || { cat "$tmp/err" >&2; fail "qemount info, missing object: exit status $status, not 3"; }

# A backing file is looked for in the bucket, by the same rule as in a
# URL directory.
qemu-img create -q -f qcow2 -F qcow2 -b ../base.qcow2 -u "$tmp/img/up.qcow2" 4M
s3_put "$tmp/img/up.qcow2" sub/up.qcow2
expect_read_failure "backing outside" \
  "s3://bkt/sub/up.qcow2: backing file '../base.qcow2' is outside the image's URL directory s3://bkt/sub/" \
  s3://bkt/sub/up.qcow2

echo "PASS: images in S3 by s3://, keys, styles and failures"
