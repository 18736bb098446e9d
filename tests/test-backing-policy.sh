#!/usr/bin/env bash
# SPDX-License-Identifier: BSD-3-Clause
# Which backing files are followed: same directory by default, anywhere
# with backing=yes, none with backing=no; never protocols, never loops.
source ./tests/functions.sh
requires nbdkit
requires qemu-img
requires qemu-io

mkdir -p "$tmp/a" "$tmp/b"
# base (in b/) has 0x11 everywhere; top (in a/) overwrites the first MiB.
qemu-img create -q -f qcow2 "$tmp/b/base.qcow2" 4M
qemu-io -c 'write -P 0x11 0 4M' "$tmp/b/base.qcow2" >/dev/null
qemu-img create -q -f qcow2 -F qcow2 -b ../b/base.qcow2 "$tmp/a/top.qcow2"
qemu-io -c 'write -P 0x22 0 1M' "$tmp/a/top.qcow2" >/dev/null
qemu-img convert -O raw "$tmp/a/top.qcow2" "$tmp/full.raw"
{ head -c 1M /dev/zero | tr '\0' '\042'; head -c 3M /dev/zero; } > "$tmp/nobacking.raw"

export tmp
serve_to ()                     # serve_to OUTPUT PLUGIN-ARGS...
{
  local out="$1"; shift
  rm -f "$out"
  qemount_nbdkit -r --run "nbdcopy \"\$uri\" \"$out\"" -- "$@" </dev/null 2>"$tmp/err"
}
expect_error ()                 # expect_error MESSAGE PLUGIN-ARGS...
{
  local want="$1"; shift
  if serve_to "$tmp/out" "$@"; then fail "served $*"; fi
  grep -qF -- "$want" "$tmp/err" || { cat "$tmp/err" >&2; fail "$*: no '$want' in the error"; }
}

expect_error "backing file '../b/base.qcow2' is outside the image's directory" \
  file="$tmp/a/top.qcow2"

serve_to "$tmp/out" file="$tmp/a/top.qcow2" backing=yes
cmp "$tmp/out" "$tmp/full.raw" || fail "backing=yes: data differs from qemu-img convert"

serve_to "$tmp/out" file="$tmp/a/top.qcow2" backing=no
cmp "$tmp/out" "$tmp/nobacking.raw" || fail "backing=no: unallocated areas are not zero"
grep -q "warning: .*top.qcow2.*not followed" "$tmp/err" || fail "backing=no: no warning"

# Same directory, but a symlink leading out of it: refused by default.
ln -s ../b/base.qcow2 "$tmp/a/link.qcow2"
qemu-img rebase -u -F qcow2 -b link.qcow2 "$tmp/a/top.qcow2"
expect_error "is outside the image's directory" file="$tmp/a/top.qcow2"

# Inside the directory: followed by default.
cp "$tmp/b/base.qcow2" "$tmp/a/base.qcow2"
qemu-img rebase -u -F qcow2 -b base.qcow2 "$tmp/a/top.qcow2"
serve_to "$tmp/out" file="$tmp/a/top.qcow2"
cmp "$tmp/out" "$tmp/full.raw" || fail "same-directory backing: data differs"

# Protocols are never followed, whatever the policy.
qemu-img rebase -u -F raw -b 'nbd:unix:/tmp/sock' "$tmp/a/top.qcow2"
expect_error "is not a local file" file="$tmp/a/top.qcow2" backing=yes
qemu-img rebase -u -F raw -b 'json:{"file.filename":"/etc/passwd"}' "$tmp/a/top.qcow2"
expect_error "is not a local file" file="$tmp/a/top.qcow2" backing=yes

# Kernel interfaces and devices are never followed, even with backing=yes:
# /proc and /sys by path (also through a symlink), character devices by
# type.
qemu-img rebase -u -F raw -b /proc/self/environ "$tmp/a/top.qcow2"
expect_error "backing file '/proc/self/environ' resolves to /proc/" \
  file="$tmp/a/top.qcow2" backing=yes
ln -s /sys/kernel/notes "$tmp/a/notes"
qemu-img rebase -u -F raw -b notes "$tmp/a/top.qcow2"
expect_error "a kernel interface, not an image" file="$tmp/a/top.qcow2" backing=yes
qemu-img rebase -u -F raw -b /dev/zero "$tmp/a/top.qcow2"
expect_error "/dev/zero: not a regular file or block device" file="$tmp/a/top.qcow2" backing=yes
expect_error "is outside the image's directory" file="$tmp/a/top.qcow2"

# Loops: top -> base -> top, and an image that is its own backing file.
qemu-img rebase -u -F qcow2 -b base.qcow2 "$tmp/a/top.qcow2"
qemu-img rebase -u -F qcow2 -b top.qcow2 "$tmp/a/base.qcow2"
expect_error "backing chain loop" file="$tmp/a/top.qcow2"
qemu-img rebase -u -F qcow2 -b top.qcow2 "$tmp/a/top.qcow2"
expect_error "backing chain loop" file="$tmp/a/top.qcow2"

# A chain deeper than 64 images is refused (each links to the next).
for i in $(seq 0 70); do
  qemu-img create -q -f qcow2 ${prev:+-F qcow2 -b "$prev"} "$tmp/a/c$i.qcow2" 1M
  prev="c$i.qcow2"
done
expect_error "backing chain is longer than 64 images" file="$tmp/a/c70.qcow2"
echo "PASS: backing policy"
