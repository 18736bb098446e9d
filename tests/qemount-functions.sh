# SPDX-License-Identifier: BSD-3-Clause
# Shared by the tests of the qemount command (tests/test-qemount-*.sh),
# on top of tests/functions.sh: the command, a private runtime directory,
# generated disk images, file comparison, and the check that a mount left
# nothing behind.

source ./tests/functions.sh

: "${QEMOUNT:=$top_builddir/server/qemount}"
export QEMOUNT_PLUGIN
# A runtime directory of our own: other tests (and real mounts) never
# see our state, nor we theirs.
export QEMOUNT_RUNTIME_DIR="$tmp/run"

# The sanitized build: nbdkit needs what functions.sh preloads for our
# plugin (through a wrapper first in PATH, which execs the real nbdkit
# so the recorded pid is nbdkit's), and qemount itself is checked for
# leaks.
if [ "$SANITIZERS" = yes ]; then
  mkdir "$tmp/bin"
  cat > "$tmp/bin/nbdkit" <<EOF
#!/bin/sh
exec env $nbdkit_env ASAN_OPTIONS=detect_leaks=0 $(command -v nbdkit) "\$@"
EOF
  chmod +x "$tmp/bin/nbdkit"
  PATH="$tmp/bin:$PATH"
  QEMOUNT_ENV="ASAN_OPTIONS=detect_leaks=1:exitcode=99"
else
  QEMOUNT_ENV=""
fi

qemount () { env $QEMOUNT_ENV "$QEMOUNT" "$@"; }

requires_root ()
{
  [ "$(id -u)" = 0 ] || skip "mounting through the kernel needs root"
  [ -c /dev/loop-control ] || skip "no /dev/loop-control: no loop devices"
  [ -c /dev/fuse ] || skip "no /dev/fuse"
  requires nbdfuse
  requires fusermount3
}

# A user other than root for the cases that need one, or skip.
requires_nobody ()
{
  [ "$(id -u)" = 0 ] || skip "needs root to switch to another user"
  requires setpriv
  id nobody >/dev/null 2>&1 || skip "no user nobody"
  chmod 755 "$tmp"
}
as_nobody ()
{
  setpriv --reuid=nobody --regid="$(id -g nobody)" --clear-groups \
    env QEMOUNT_RUNTIME_DIR="$tmp/run-nobody" "$@"
}

# expect STATUS MESSAGE COMMAND...: COMMAND exits with STATUS and says
# MESSAGE on stderr.
expect ()
{
  local want=$1 msg=$2 got=0
  shift 2
  "$@" >"$tmp/out" 2>"$tmp/err" || got=$?
  if [ "$got" != "$want" ]; then
    cat "$tmp/err" >&2
    fail "$*: exit status $got, expected $want"
  fi
  if ! grep -qF -- "$msg" "$tmp/err"; then
    cat "$tmp/err" >&2
    fail "$*: no '$msg' in the messages"
  fi
}

# wait_for CONDITION...: up to 10 seconds.
wait_for ()
{
  for _ in $(seq 100); do "$@" && return 0; sleep 0.1; done
  fail "timed out waiting for: $*"
}

# gone PID...: wait until none of these processes of this test runs
# (a pid no longer running something under $tmp; a zombie has no
# command line): SIGKILL takes effect when the process next runs, not
# when kill returns.
gone ()
{
  local pid i
  for pid in "$@"; do
    for i in $(seq 100); do
      grep -qF -- "$tmp" "/proc/$pid/cmdline" 2>/dev/null || continue 2
      sleep 0.1
    done
    fail "pid $pid is still running: $(tr '\0' ' ' < "/proc/$pid/cmdline")"
  done
}

# The files under the tree we put into the images: a text file, random
# data across many clusters, a sparse file, an empty file, nested
# directories.  No spaces in names: mkfs.xfs prototype files cannot have
# them.
make_tree ()
{
  local t=$1
  mkdir -p "$t/dir/sub"
  echo "hello from qemount" > "$t/hello.txt"
  head -c 300000 /dev/urandom > "$t/random.bin"
  head -c 1500000 /dev/urandom > "$t/dir/big.bin"
  truncate -s 2M "$t/dir/sparse.bin"
  printf 'tail' >> "$t/dir/sparse.bin"
  : > "$t/dir/sub/empty"
  seq 1 5000 > "$t/dir/sub/numbers.txt"
}

# manifest DIR: every regular file's sha256 and every directory, sorted;
# the filesystems' own lost+found is not ours.
manifest ()
{
  ( cd "$1" &&
    find . -path ./lost+found -prune -o -type d -print | sort &&
    find . -path ./lost+found -prune -o -type f -print0 | sort -z |
      xargs -0r sha256sum )
}

# An mkfs.xfs prototype file that copies directory $1.
xfs_proto ()
{
  echo /dev/null
  echo "0 0"
  echo "d--755 0 0"
  xfs_proto_dir "$1" " "
  echo '$'
}
xfs_proto_dir ()
{
  local f
  for f in "$1"/*; do
    [ -e "$f" ] || continue
    if [ -d "$f" ]; then
      echo "$2$(basename "$f") d--755 0 0"
      xfs_proto_dir "$f" "$2 "
      echo "$2\$"
    else
      echo "$2$(basename "$f") ---644 0 0 $f"
    fi
  done
}

# put_fs DISK N FSFILE: write a filesystem image into partition N.
put_fs ()
{
  local start
  start=$(sfdisk --json "$1" | jq ".partitiontable.partitions[] | select(.node == \"$1$2\") | .start")
  [ -n "$start" ] || fail "$1: no partition $2"
  dd if="$3" of="$1" bs=512 seek="$start" conv=notrunc,sparse status=none
}

# in_gpt FSFILE DISK TYPE: DISK is a GPT disk whose one partition, of
# sfdisk's TYPE, starts at 1 MiB and holds FSFILE (whole sectors).
in_gpt ()
{
  local size
  size=$(stat -c %s "$1")
  truncate -s $((size + 2 * 1048576)) "$2"
  echo "start=2048, size=$((size / 512)), type=$3" | sfdisk -q -X gpt "$2" >/dev/null ||
    fail "sfdisk cannot make $2"
  dd if="$1" of="$2" bs=1M seek=1 conv=notrunc status=none
}

# The disks the tests mount, in $tmp (raw), from the tree in $tmp/tree:
#   mbr.img    DOS table: 1 Linux swap, 2 extended, 5 logical ext4
#   gpt.img    GPT: 1 ext2, 2 xfs, 3 btrfs (xfs wants >= 300 MiB; sparse)
#   whole.img  ext4 on the whole disk, no partition table
# and for each, NAME.qcow2 and NAME.hdd (ploop) with convert_images.
make_images ()
{
  requires sfdisk
  requires mkfs.ext4
  requires jq
  make_tree "$tmp/tree"
  manifest "$tmp/tree" > "$tmp/tree.manifest"

  truncate -s 48M "$tmp/mbr.img"
  sfdisk -q "$tmp/mbr.img" <<EOF
label: dos
start=2048, size=8192, type=82
start=10240, size=86016, type=5
start=12288, size=81920, type=83
EOF
  truncate -s 4M "$tmp/swap.fs"
  mkswap -q "$tmp/swap.fs" >/dev/null
  put_fs "$tmp/mbr.img" 1 "$tmp/swap.fs"
  truncate -s 40M "$tmp/p5.fs"
  mkfs.ext4 -q -F -L logical -d "$tmp/tree" "$tmp/p5.fs"
  put_fs "$tmp/mbr.img" 5 "$tmp/p5.fs"

  if [ "${1-}" != mbr-only ]; then
    requires mkfs.xfs
    requires mkfs.btrfs
    truncate -s 450M "$tmp/gpt.img"
    sfdisk -q "$tmp/gpt.img" <<EOF
label: gpt
start=2048, size=32768, type=linux, name=ext2part
start=34816, size=614400, type=linux, name=xfspart
start=649216, size=245760, type=linux, name=btrfspart
EOF
    truncate -s 16M "$tmp/p1.fs"
    mkfs.ext2 -q -F -L ext2fs -d "$tmp/tree" "$tmp/p1.fs"
    put_fs "$tmp/gpt.img" 1 "$tmp/p1.fs"
    truncate -s 300M "$tmp/p2.fs"
    xfs_proto "$tmp/tree" > "$tmp/xfs.proto"
    mkfs.xfs -q -f -L xfsfs -p "$tmp/xfs.proto" "$tmp/p2.fs"
    put_fs "$tmp/gpt.img" 2 "$tmp/p2.fs"
    truncate -s 120M "$tmp/p3.fs"
    mkfs.btrfs -q -f -L btrfsfs -r "$tmp/tree" "$tmp/p3.fs" >/dev/null 2>&1 ||
      fail "mkfs.btrfs failed"
    put_fs "$tmp/gpt.img" 3 "$tmp/p3.fs"
    rm -f "$tmp/p1.fs" "$tmp/p2.fs" "$tmp/p3.fs"
  fi

  truncate -s 16M "$tmp/whole.img"
  mkfs.ext4 -q -F -L whole -d "$tmp/tree" "$tmp/whole.img"
  rm -f "$tmp/swap.fs" "$tmp/p5.fs"
}

# The start of most mount tests: root, the DOS disk (and with "convert"
# its qcow2 and ploop copies), and an empty $mnt.
setup_mount_test ()
{
  requires_root
  requires nbdkit
  make_images mbr-only
  [ "${1-}" != convert ] || convert_images mbr
  mnt="$tmp/mnt"
  mkdir "$mnt"
}

convert_images ()
{
  local name
  requires qemu-img
  for name in "$@"; do
    qemu-img convert -O qcow2 "$tmp/$name.img" "$tmp/$name.qcow2"
    qemu-img convert -O parallels "$tmp/$name.img" "$tmp/$name.hdd"
  done
}

# The pids a mount runs on, from qemount list --json.
mount_pids ()
{
  qemount list --json |
    jq -r --arg d "$1" '.[] | select(.mountpoint == $d) |
                        .nbdkit_pid, .files[].nbdfuse_pid'
}

# assert_clean [DIR [PID...]]: nothing of ours is left: the recorded
# processes are gone (a pid is only "ours" while its cmdline is nbdkit
# or nbdfuse), no loop device is backed by a file in the runtime
# directory, nothing is mounted there or on DIR, no process has the
# runtime directory on its command line, and no state is left.
assert_clean ()
{
  local dir=${1-} pid cmd
  [ $# -gt 0 ] && shift
  for pid in "$@"; do
    cmd=$(tr '\0' ' ' 2>/dev/null < "/proc/$pid/cmdline") || continue
    case "$cmd" in
      *nbdkit*|*nbdfuse*) fail "pid $pid is still running: $cmd" ;;
    esac
  done
  if pgrep -f -- "$QEMOUNT_RUNTIME_DIR" >/dev/null; then
    fail "still running: $(pgrep -a -f -- "$QEMOUNT_RUNTIME_DIR")"
  fi
  if losetup -a | grep -F -- "$QEMOUNT_RUNTIME_DIR"; then
    fail "a loop device is left"
  fi
  if grep -F -- "$QEMOUNT_RUNTIME_DIR" /proc/self/mountinfo; then
    fail "a mount is left in the runtime directory"
  fi
  if [ -n "$dir" ] && mountpoint -q "$dir"; then
    fail "$dir is still a mount point"
  fi
  if [ -d "$QEMOUNT_RUNTIME_DIR" ] && [ -n "$(ls -A "$QEMOUNT_RUNTIME_DIR")" ]; then
    fail "state left: $(ls -A "$QEMOUNT_RUNTIME_DIR")"
  fi
}

# What the helper VM tests need: QEMU, FUSE and sshfs, and the guest of
# the source tree, shared by the normal and sanitized builds; built
# (once, cached) if it is not there, else skip.
requires_guest ()
{
  requires nbdkit
  requires qemu-system-x86_64
  requires sshfs
  requires fusermount3
  requires qemu-img
  [ -c /dev/fuse ] || skip "no /dev/fuse"
  : "${QEMOUNT_GUEST_DIR:=$top_srcdir/build/guest}"
  export QEMOUNT_GUEST_DIR
  if ! "$QEMOUNT" guest info >/dev/null 2>&1; then
    "$top_srcdir/guests/linux/build-guest" "$QEMOUNT_GUEST_DIR" > "$tmp/guest.log" 2>&1 ||
      skip "the helper VM cannot be built here: $(tail -n 1 "$tmp/guest.log")"
  fi
}

# assert_clean, but the KVM verdict (kvm-verdict in the runtime
# directory) is meant to stay.
vm_assert_clean ()
{
  local v="$QEMOUNT_RUNTIME_DIR/kvm-verdict" saved=
  [ -f "$v" ] && saved=$(cat "$v") && rm "$v"
  assert_clean "$@"
  [ -z "$saved" ] || echo "$saved" > "$v"
}

# On exit, before $tmp goes: whatever a failed test left mounted.
qemount_cleanup ()
{
  local state mp pidfile pid loop
  for state in "$QEMOUNT_RUNTIME_DIR"/mount.*/state; do
    [ -f "$state" ] || continue
    mp=$(sed -n 's/^mountpoint=//p' "$state")
    [ -n "$mp" ] && "$QEMOUNT" umount "$mp" >/dev/null 2>&1
  done
  grep -o " $tmp[^ ]*" /proc/self/mountinfo | sort -r |
    while read -r mp; do umount -l "$mp" 2>/dev/null || fusermount3 -uz "$mp"; done
  losetup -a | grep -F -- "$tmp" | cut -d: -f1 |
    while read -r loop; do losetup -d "$loop"; done
  # Also the runtime directory of a test's unprivileged user, which a
  # failure part-way through that case would otherwise leave running.
  for pidfile in "$QEMOUNT_RUNTIME_DIR"/mount.*/*.pid "$tmp"/run-*/mount.*/*.pid; do
    [ -f "$pidfile" ] || continue
    pid=$(cat "$pidfile")
    grep -qF -- "${pidfile%/mount.*}" "/proc/$pid/cmdline" 2>/dev/null &&
      kill "$pid"
  done
  return 0
}
on_exit qemount_cleanup

# snapshotted_ext4 SIZE MAKE_TREE MANIFEST: $tmp/fs.qcow2, an ext4 of
# SIZE whose files, made by MAKE_TREE in $tmp/t1, are its internal
# snapshot s1, and whose current state holds them changed ($tmp/t2:
# hello.txt rewritten, random.bin gone); $tmp/t1.manifest and
# $tmp/t2.manifest as MANIFEST lists them.
snapshotted_ext4 ()
{
  local size=$1 make=$2 list=$3
  "$make" "$tmp/t1"
  "$list" "$tmp/t1" > "$tmp/t1.manifest"
  cp -a "$tmp/t1" "$tmp/t2"
  echo "changed after s1" > "$tmp/t2/hello.txt"
  rm "$tmp/t2/random.bin"
  "$list" "$tmp/t2" > "$tmp/t2.manifest"
  truncate -s "$size" "$tmp/fs1.img" "$tmp/fs2.img"
  mkfs.ext4 -q -F -d "$tmp/t1" "$tmp/fs1.img"
  mkfs.ext4 -q -F -d "$tmp/t2" "$tmp/fs2.img"
  qemu-img convert -O qcow2 "$tmp/fs1.img" "$tmp/fs.qcow2"
  qemu-img snapshot -c s1 "$tmp/fs.qcow2"
  # The changed filesystem written into the image's current state.
  qemu-img convert -n -O qcow2 "$tmp/fs2.img" "$tmp/fs.qcow2"
}
