#!/usr/bin/env bash
# SPDX-License-Identifier: BSD-3-Clause
# bash completion for qemount (completion/qemount.bash): subcommands,
# each command's options and their choices as its --help gives them,
# file names where an option or argument takes a file, directories for
# the mount point, and the mounts qemount list shows for umount.
source ./tests/qemount-functions.sh
source "$top_srcdir/completion/qemount.bash"

# completes EXPECTED WORDS...: completing the last of WORDS (the words
# typed after "qemount") offers exactly EXPECTED (sorted, one per line).
completes ()
{
  local expected=$1 got
  shift
  COMP_WORDS=(qemount "$@")
  COMP_CWORD=$(($# ))
  _qemount || :   # (compgen fails when nothing matches)
  got=$(printf '%s\n' "${COMPREPLY[@]}" | sort)
  [ "$got" = "$(printf '%s\n' $expected | sort)" ] ||
    fail "qemount $*<TAB>: offers [$(echo $got)], expected [$expected]"
}

completes "info" in
completes "mount" m
completes "umount" u
completes "create commit info verify" snapshot ""
completes "build info" guest ""
completes "kernel vm auto" mount disk.img dir --via ""
completes "auto kvm tcg" extract disk.img --accel ""
completes "yes no samedir" info disk.img --backing ""
completes "zstd lz4 auto" snapshot create in.img out.qsnap --codec ""
completes "--json" info disk.img --j
completes "--overlay" mount disk.img dir --ov
completes "--thin" snapshot commit --th
completes "--help --version --verbose" --

mkdir "$tmp/files" "$tmp/files/subdir"
touch "$tmp/files/a.qcow2" "$tmp/files/b.vhd"
cd "$tmp/files"
completes "a.qcow2 b.vhd subdir" info ""
completes "a.qcow2 b.vhd subdir" mount --overlay ""
completes "a.qcow2" mount --partition 2 a.
completes "subdir" mount a.qcow2 ""
completes "subdir" mount --via vm a.qcow2 ""
completes "" mount a.qcow2 --partition ""
cd - >/dev/null

# umount: what qemount list shows, by directory and by id.
if [ -c /dev/fuse ] && command -v nbdfuse >/dev/null; then
  truncate -s 1M "$tmp/disk.img"
  mnt="$tmp/mount point"
  mkdir "$mnt"
  qemount mount --raw "$tmp/disk.img" "$mnt" || fail "mount --raw failed"
  unmount () { qemount umount "$mnt"; }
  on_exit unmount
  id=$(qemount list --json | jq -r '.[0].id')
  completes "$id" umount "${id:0:3}"
  COMP_WORDS=(qemount umount "$tmp/mount")
  COMP_CWORD=2
  _qemount || :   # (compgen fails when nothing matches)
  [ "${COMPREPLY[*]}" = "$mnt" ] ||
    fail "qemount umount <TAB>: offers [${COMPREPLY[*]}], expected [$mnt]"
else
  echo "SKIP (one case): no /dev/fuse or nbdfuse for a mount to complete"
fi
echo "PASS: bash completion"
