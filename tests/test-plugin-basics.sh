#!/usr/bin/env bash
# SPDX-License-Identifier: BSD-3-Clause
# The plugin's interface: --dump-plugin, --help, parameters, NBD flags.
source ./tests/functions.sh
requires nbdkit
requires nbdinfo
requires qemu-img

out=$(qemount_nbdkit --dump-plugin </dev/null)
grep -qx 'qemount_formats=qcow2,ploop,qsnap,vhdx,ewf,vdi,vmdk,dmg,vhd,raw' <<<"$out" || fail "--dump-plugin: no qemount_formats line: $out"
for lib in libxml2 zstd libdeflate lz4 isal bzip2 xz libewf; do
  grep -Eq "^qemount_${lib}_version=[0-9]" <<<"$out" || fail "--dump-plugin: no $lib version"
done
grep -qx 'thread_model=parallel' <<<"$out" || fail "thread model is not parallel"

out=$(qemount_nbdkit --help </dev/null)
for key in file= format= backing=; do
  grep -q "$key" <<<"$out" || fail "--help does not document $key"
done

# Parameter errors: a message and a non-zero exit, before serving.
expect_error ()
{
  local want="$1"; shift
  if qemount_nbdkit -r --run true -- "$@" </dev/null >"$tmp/out" 2>&1; then
    fail "nbdkit $* succeeded"
  fi
  grep -qF -- "$want" "$tmp/out" || { cat "$tmp/out" >&2; fail "nbdkit $*: no '$want' in the error"; }
}
expect_error "you must supply the file=<IMAGE> parameter"
expect_error "$tmp/missing.img: No such file or directory" file="$tmp/missing.img"
truncate -s 1M "$tmp/disk.raw"
expect_error "unknown format 'qed'" file="$tmp/disk.raw" format=qed
expect_error "unknown parameter 'colour'" file="$tmp/disk.raw" colour=red
expect_error "backing=maybe: must be yes, no or samedir" file="$tmp/disk.raw" backing=maybe

# The export with -r: read-only, multi-conn, extents, cluster-sized
# preferred block.
qemu-img create -q -f qcow2 -o cluster_size=65536 "$tmp/disk.qcow2" 10M
export tmp
qemount_nbdkit -r --run 'nbdinfo --json "$uri" > "$tmp/info.json"' -- "$tmp/disk.qcow2" </dev/null
check_info ()
{
  jq -e "$1" "$tmp/info.json" >/dev/null || { cat "$tmp/info.json" >&2; fail "nbdinfo: $1 is not true"; }
}
check_info '.exports[0]."export-size" == 10485760'
check_info '.exports[0].is_read_only == true'
check_info '.exports[0].can_multi_conn == true'
check_info '.exports[0].block_size_preferred == 65536'
check_info '.exports[0].block_size_minimum == 1'
check_info '[.exports[0].contexts[] | select(. == "base:allocation")] | length == 1'
# Larger blocks (a VHDX's 32 MiB) are not what a client should ask for.
qemu-img create -q -f vhdx -o block_size=32M "$tmp/disk.vhdx" 64M
qemount_nbdkit -r --run 'nbdinfo --json "$uri" > "$tmp/info.json"' -- "$tmp/disk.vhdx" </dev/null
check_info '.exports[0].block_size_preferred == 2097152'

# Without -r: writable through an overlay, with flush, trim, zero, FUA,
# still multi-conn; the overlay's 4 KiB blocks are the preferred size.
qemount_nbdkit --run 'nbdinfo --json "$uri" > "$tmp/info.json"' -- "$tmp/disk.qcow2" </dev/null
check_info '.exports[0].is_read_only == false'
check_info '.exports[0].can_flush == true'
check_info '.exports[0].can_trim == true'
check_info '.exports[0].can_zero == true'
check_info '.exports[0].can_fua == true'
check_info '.exports[0].can_multi_conn == true'
check_info '.exports[0].block_size_preferred == 4096'

# Forced formats: a qcow2 file served as raw is its bytes; as ploop it is
# refused because it has no ploop signature.
qemount_nbdkit -r --run 'nbdcopy "$uri" "$tmp/as-raw"' -- file="$tmp/disk.qcow2" format=raw </dev/null
cmp -s "$tmp/as-raw" "$tmp/disk.qcow2" || fail "format=raw did not serve the file's bytes"
expect_error "not a ploop image" file="$tmp/disk.qcow2" format=ploop

# The plugin only reads snapshots: the qsnap writer is not linked into it.
if command -v nm >/dev/null; then
  ! nm -D --defined-only "$QEMOUNT_PLUGIN" | grep -E ' (qsnap_create|qsnap_commit)$' ||
    fail "the qsnap writer is linked into the plugin"
fi
echo "PASS: plugin interface"
