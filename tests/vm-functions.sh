# SPDX-License-Identifier: BSD-3-Clause
# Filesystem images with a known tree, for the helper-VM tests
# (tests/test-qemount-vm.sh) and the full matrix (scripts/vm-matrix).
# Plain bash: no test framework needed, so both can source it.

# vm_tree DIR: text, binary, nested directories, a symlink, a hard link,
# an empty file, a name with spaces, a 5 MiB file.
vm_tree ()
{
  local t=$1
  mkdir -p "$t/nested/deeper"
  echo "hello from the helper VM" > "$t/hello.txt"
  head -c 100000 /dev/urandom > "$t/random.bin"
  head -c 5242880 /dev/urandom > "$t/nested/five-mib.bin"
  seq 1 3000 > "$t/nested/deeper/numbers.txt"
  : > "$t/empty"
  echo "spaces in the name" > "$t/name with spaces.txt"
  ln -s hello.txt "$t/link-to-hello"
  ln "$t/nested/deeper/numbers.txt" "$t/hardlink-numbers.txt"
}

# vm_tree_plain SRC DST: the tree without what FAT-like filesystems
# cannot hold (symlinks; a hard link becomes a second copy).
vm_tree_plain ()
{
  cp -rL "$1" "$2"
}

# vm_tree_flat SRC DST: for filesystems with one directory and 14-byte
# names (bfs): the top-level regular files that fit.
vm_tree_flat ()
{
  mkdir -p "$2"
  cp "$1/hello.txt" "$1/random.bin" "$1/empty" "$2/"
  cp "$1/nested/deeper/numbers.txt" "$2/numbers.txt"
}

# vm_flat FS: true if FS takes vm_tree_flat.
vm_flat ()
{
  [ "$1" = bfs ]
}

# vm_manifest DIR: directories, symlinks with their targets, regular files
# with their sha256, sorted; the filesystems' own lost+found (and
# nilfs2's .nilfs) is not ours.
vm_manifest ()
{
  ( cd "$1" &&
    find . \( -path ./lost+found -o -path ./.nilfs \) -prune -o -type d -print |
      LC_ALL=C sort &&
    find . \( -path ./lost+found -o -path ./.nilfs \) -prune -o -type l \
      -printf '%p -> %l\n' | LC_ALL=C sort &&
    find . \( -path ./lost+found -o -path ./.nilfs \) -prune -o -type f -print0 |
      LC_ALL=C sort -z | xargs -0r sha256sum )
}

# The filesystems the matrix knows, in the order it tries them.
VM_FILESYSTEMS="ext2 ext3 ext4 xfs btrfs fat12 fat16 fat32 exfat ntfs
  iso9660 iso9660-joliet squashfs erofs romfs cramfs f2fs jfs udf minix
  reiserfs nilfs2 hfs bfs apfs"

# vm_plain FS: true if FS holds no symlinks or hard links.
vm_plain ()
{
  case "$1" in
    vfat|fat12|fat16|fat32|exfat|iso9660-joliet|hfs) return 0 ;;
    *) return 1 ;;
  esac
}

# vm_make_fs FS TREE OUT: a filesystem FS on the whole of the raw image
# OUT holding TREE.  Prints the reason and returns 1 when this machine
# cannot make it.
vm_make_fs ()
{
  local fs=$1 tree=$2 out=$3 d
  rm -f "$out"
  case "$fs" in
    ext2|ext3|ext4)
      command -v mkfs.$fs >/dev/null || { echo "no mkfs.$fs"; return 1; }
      truncate -s 32M "$out"
      mkfs.$fs -q -F -d "$tree" "$out" ;;
    xfs)
      command -v mkfs.xfs >/dev/null || { echo "no mkfs.xfs"; return 1; }
      # mkfs.xfs -p cannot name files with spaces or make links: copy
      # the tree in with the host kernel, which mounts xfs here.
      grep -qw xfs /proc/filesystems || { echo "the host kernel has no xfs to fill it"; return 1; }
      [ "$(id -u)" = 0 ] || { echo "filling xfs needs root"; return 1; }
      truncate -s 300M "$out"
      mkfs.xfs -q -f "$out" || return 1
      d=$(mktemp -d)
      mount -o loop "$out" "$d" || { rmdir "$d"; echo "cannot loop-mount xfs"; return 1; }
      cp -a "$tree/." "$d/"
      umount "$d"; rmdir "$d" ;;
    btrfs)
      command -v mkfs.btrfs >/dev/null || { echo "no mkfs.btrfs"; return 1; }
      truncate -s 120M "$out"
      mkfs.btrfs -q -f -r "$tree" "$out" >/dev/null 2>&1 ;;
    vfat)
      command -v mkfs.vfat >/dev/null && command -v mcopy >/dev/null ||
        { echo "no mkfs.vfat or mcopy (dosfstools, mtools)"; return 1; }
      truncate -s 32M "$out"
      mkfs.vfat "$out" >/dev/null &&
        MTOOLS_SKIP_CHECK=1 mcopy -s -p -i "$out" "$tree"/* ::/ ;;
    exfat)
      command -v mkfs.exfat >/dev/null && command -v mount.exfat-fuse >/dev/null ||
        { echo "no mkfs.exfat or exfat-fuse (exfatprogs, exfat-fuse)"; return 1; }
      truncate -s 32M "$out"
      mkfs.exfat "$out" >/dev/null || return 1
      # exfat-fuse wants a block device.
      [ "$(id -u)" = 0 ] || { echo "filling exfat needs root (a loop device)"; return 1; }
      local loop
      loop=$(losetup -f --show "$out") || { echo "no loop device"; return 1; }
      d=$(mktemp -d)
      if ! mount.exfat-fuse "$loop" "$d" >/dev/null 2>&1; then
        losetup -d "$loop"; rmdir "$d"; echo "exfat-fuse cannot mount"; return 1
      fi
      cp -r "$tree/." "$d/"
      fusermount3 -u "$d" || umount "$d"
      losetup -d "$loop"; rmdir "$d" ;;
    ntfs)
      command -v mkntfs >/dev/null && command -v ntfs-3g >/dev/null ||
        { echo "no mkntfs or ntfs-3g"; return 1; }
      truncate -s 32M "$out"
      mkntfs -q -F -f "$out" >/dev/null 2>&1 || return 1
      d=$(mktemp -d)
      ntfs-3g "$out" "$d" || { rmdir "$d"; echo "ntfs-3g cannot mount"; return 1; }
      cp -a "$tree/." "$d/"
      fusermount3 -u "$d" || umount "$d"; rmdir "$d" ;;
    iso9660)
      command -v xorriso >/dev/null || { echo "no xorriso"; return 1; }
      xorriso -as mkisofs -quiet -R -J -o "$out" "$tree" 2>/dev/null ;;
    squashfs)
      command -v mksquashfs >/dev/null || { echo "no mksquashfs"; return 1; }
      mksquashfs "$tree" "$out" -quiet -no-progress >/dev/null ;;
    erofs)
      command -v mkfs.erofs >/dev/null || { echo "no mkfs.erofs"; return 1; }
      mkfs.erofs "$out" "$tree" >/dev/null 2>&1 ;;
    f2fs)
      command -v mkfs.f2fs >/dev/null && command -v sload.f2fs >/dev/null ||
        { echo "no mkfs.f2fs or sload.f2fs"; return 1; }
      truncate -s 128M "$out"
      # -P: the tree's owners, not root's.
      mkfs.f2fs -q -f "$out" >/dev/null && sload.f2fs -P -f "$tree" "$out" >/dev/null ;;
    # More filesystems: the makers that take a tree, then those filled
    # through the helper VM (vm_fill_via_vm).
    fat12|fat16|fat32)
      command -v mkfs.fat >/dev/null && command -v mcopy >/dev/null ||
        { echo "no mkfs.fat or mcopy (dosfstools, mtools)"; return 1; }
      # FAT12 holds at most 4084 clusters, FAT32 at least 65525.
      case "$fs" in
        fat12) truncate -s 12M "$out"; set -- -F 12 -s 8 ;;
        fat16) truncate -s 32M "$out"; set -- -F 16 ;;
        fat32) truncate -s 64M "$out"; set -- -F 32 -s 1 ;;
      esac
      mkfs.fat "$@" "$out" >/dev/null &&
        MTOOLS_SKIP_CHECK=1 mcopy -s -p -i "$out" "$tree"/* ::/ ;;
    iso9660-joliet)
      command -v xorriso >/dev/null || { echo "no xorriso"; return 1; }
      xorriso -as mkisofs -quiet -J -o "$out" "$tree" 2>/dev/null ;;
    romfs)
      command -v genromfs >/dev/null || { echo "no genromfs"; return 1; }
      genromfs -f "$out" -d "$tree" -V qemount ;;
    cramfs)
      command -v mkfs.cramfs >/dev/null || { echo "no mkfs.cramfs"; return 1; }
      mkfs.cramfs "$tree" "$out" >/dev/null 2>&1 ;;
    ufs1)
      command -v makefs >/dev/null || { echo "no makefs"; return 1; }
      makefs -t ffs -o version=1 "$out" "$tree" >/dev/null ;;
    ufs2)
      # makefs puts UFS2's superblock at 8 KiB, where Linux does not
      # look (server/ufs.c); moved to 64 KiB as the BSDs' newfs has it,
      # into inodes made spare for it.
      command -v makefs >/dev/null || { echo "no makefs"; return 1; }
      makefs -t ffs -o version=2,density=4096 -s 32m "$out" "$tree" >/dev/null &&
        python3 "$top_srcdir/scripts/ufs2-sb64k.py" "$out" ;;
    hfs)
      # hfsutils writes an HFS image without mounting it (HFS+ has no
      # maker in Debian 12: hfsprogs is not in bookworm).
      command -v hformat >/dev/null && command -v hcopy >/dev/null ||
        { echo "no hformat or hcopy (hfsutils)"; return 1; }
      truncate -s 32M "$out"
      vm_fill_hfs "$tree" "$out" ;;
    jfs|udf|minix|reiserfs|nilfs2|bfs|apfs)
      local mkfs size
      case "$fs" in
        jfs) mkfs="mkfs.jfs -q" size=64M ;;
        udf) mkfs="mkudffs" size=32M ;;
        minix) mkfs="mkfs.minix -3" size=32M ;;   # v3: 60-byte names
        reiserfs) mkfs="mkfs.reiserfs -q -f" size=64M ;;
        nilfs2) mkfs="mkfs.nilfs2 -q -f" size=160M ;;
        bfs) mkfs="mkfs.bfs" size=16M ;;
        apfs) mkfs="mkapfs" size=128M ;;   # its smallest container
      esac
      command -v ${mkfs%% *} >/dev/null || { echo "no ${mkfs%% *}"; return 1; }
      truncate -s $size "$out"
      $mkfs "$out" >/dev/null 2>&1 || { echo "${mkfs%% *} failed"; return 1; }
      vm_fill_via_vm "$fs" "$tree" "$out" || return 1 ;;
    *)
      echo "no way to fill $fs here without mounting it"; return 1 ;;
  esac || { echo "making $fs failed"; return 1; }
  # A little slack at the end: nbdkit serves whole sectors.
  truncate -s %4096 "$out"
}

# Metadata extract must keep where the filesystem holds it (qemount
# extract runs GNU tar --xattrs --acls in the guest).

# vm_tree_attrs DIR: on a vm_tree, hello.txt owned by 1234:5678, mode
# 640, an old mtime and the xattr user.qemount=hello; random.bin a POSIX
# ACL (u:1234:r).  Says why and returns 1 if DIR cannot hold them.
vm_tree_attrs ()
{
  local t=$1
  [ "$(id -u)" = 0 ] || { echo "chown to 1234:5678 needs root"; return 1; }
  setfattr -n user.qemount -v hello "$t/hello.txt" 2>/dev/null ||
    { echo "$t takes no user xattrs (setfattr, from attr)"; return 1; }
  setfacl -m u:1234:r "$t/random.bin" 2>/dev/null ||
    { echo "$t takes no POSIX ACLs (setfacl, from acl)"; return 1; }
  chown 1234:5678 "$t/hello.txt" && chmod 640 "$t/hello.txt" &&
    touch -d '2001-02-03 04:05:06 UTC' "$t/hello.txt"
}

# vm_kept DIR: which of those DIR (an unpacked extract) still has, in
# the order "owner mode mtime xattr acl hardlink" (the hard link: the two
# names of numbers.txt are one inode).
vm_kept ()
{
  local d=$1 k=
  [ "$(stat -c %u:%g "$d/hello.txt" 2>/dev/null)" = 1234:5678 ] && k="$k owner"
  [ "$(stat -c %a "$d/hello.txt" 2>/dev/null)" = 640 ] && k="$k mode"
  [ "$(stat -c %Y "$d/hello.txt" 2>/dev/null)" = 981173106 ] && k="$k mtime"
  [ "$(getfattr --only-values -n user.qemount "$d/hello.txt" 2>/dev/null)" = hello ] &&
    k="$k xattr"
  getfacl -c -n "$d/random.bin" 2>/dev/null | grep -qx 'user:1234:r--' && k="$k acl"
  [ -e "$d/hardlink-numbers.txt" ] &&
    [ "$(stat -c %i "$d/hardlink-numbers.txt")" = \
      "$(stat -c %i "$d/nested/deeper/numbers.txt" 2>/dev/null)" ] && k="$k hardlink"
  echo "${k# }"
}

# vm_keeps FS: what of vm_kept an extract of FS made by vm_make_fs must
# keep (measured; what is missing is the filesystem's or its maker's):
# squashfs stores no ACLs; sload.f2fs no xattrs; Rock Ridge neither, and
# Linux's isofs numbers inodes by directory entry, so a hard link shows
# as two files; what vm_fill_via_vm fills went through sshfs, which
# carries no xattrs or ACLs, and the owners do not come through either;
# ntfs-3g, with no user mapping, no owners or modes; romfs, FAT, exFAT,
# HFS, Joliet have no owners.
vm_keeps ()
{
  case "$1" in
    ext2|ext3|ext4|xfs|btrfs|erofs) echo owner mode mtime xattr acl hardlink ;;
    squashfs) echo owner mode mtime xattr hardlink ;;
    f2fs) echo owner mode mtime hardlink ;;
    ntfs) echo mtime xattr hardlink ;;
    iso9660) echo owner mode mtime ;;
    jfs|udf|minix|reiserfs|nilfs2|apfs) echo mode hardlink ;;
    bfs) echo mode ;;
  esac
}

# vm_unpack TAR DIR: unpack an extract with owners, user xattrs and ACLs
# (only user.*: HFS's hfs.type, say, has no place on the host).
vm_unpack ()
{
  rm -rf "$2" && mkdir -p "$2" &&
    tar --xattrs --xattrs-include='user.*' --acls --numeric-owner -C "$2" -xf "$1"
}

# vm_fill_hfs TREE OUT: an HFS volume on OUT holding TREE (no symlinks or
# hard links: HFS has none), with hfsutils, which keeps its current
# volume in ~/.hcwd: a private HOME.
vm_fill_hfs ()
{
  local tree=$1 out=$2 f rel home
  home=$(mktemp -d)
  (
    export HOME=$home
    hformat -l qemount "$out" >/dev/null &&
    cd "$tree" &&
    find . -mindepth 1 | LC_ALL=C sort | while IFS= read -r f; do
      rel=${f#./}
      if [ -d "$f" ]; then hmkdir ":${rel//\//:}" || exit 1
      else hcopy -r "$f" ":${rel//\//:}" || exit 1; fi
    done &&
    humount
  )
  local st=$?
  rm -rf "$home"
  return $st
}

# vm_fill_via_vm FS TREE OUT: fill the empty FS on the raw image OUT with
# TREE through the helper VM itself, for filesystems no tool here fills
# without mounting them and the host kernel cannot mount: a --rw mount
# with a persistent overlay, cp, umount; then base + overlay committed
# to a qsnap and read back to raw with nbdcopy.  Owners, modes, times,
# symlinks and hard links go through sshfs; xattrs and ACLs do not.
vm_fill_via_vm ()
{
  local fs=$1 tree=$2 out=$3 q=${QEMOUNT:-qemount} d st=0
  command -v nbdcopy >/dev/null || { echo "no nbdcopy (libnbd-bin)"; return 1; }
  d=$(mktemp -d)
  rm -f "$out.ovl" "$out.qsnap" "$out.filled"
  if ! "$q" mount "$out" "$d" --via vm --rw --overlay "$out.ovl" \
       --fstype "$fs" 2> "$d.err"; then
    echo "the helper VM cannot mount the empty $fs:" \
      "$(grep -m 1 'error:' "$d.err" | sed 's/^qemount: error: [^:]*: //')"
    rm -rf "$d" "$d.err" "$out.ovl"
    return 1
  fi
  # tar, not cp -p: cp fails where sshfs cannot take the ACL.
  if ! { tar -C "$tree" -cf - . |
         tar -C "$d" -xpf - --numeric-owner --no-acls \
           --no-xattrs --no-overwrite-dir; } 2> "$d.err"; then
    echo "copying into $fs through the helper VM: $(head -n 1 "$d.err")"
    st=1
  fi
  "$q" umount "$d" || { echo "umount of the $fs being filled failed"; st=1; }
  [ $st = 0 ] && {
    "$q" snapshot commit --base "$out" --overlay "$out.ovl" \
      --output "$out.qsnap" >/dev/null &&
    VM_FILLED=$out.filled nbdkit -U - "$QEMOUNT_PLUGIN" file="$out.qsnap" \
      --run 'nbdcopy "$uri" "$VM_FILLED"' &&
    mv "$out.filled" "$out"
  } || { [ $st = 1 ] || echo "turning the overlay into the $fs image failed"; st=1; }
  rm -rf "$d" "$d.err" "$out.ovl" "$out.qsnap" "$out.filled"
  return $st
}
