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

# vm_manifest DIR: directories, symlinks with their targets, regular files
# with their sha256, sorted; the filesystems' own lost+found is not ours.
vm_manifest ()
{
  ( cd "$1" &&
    find . -path ./lost+found -prune -o -type d -print | LC_ALL=C sort &&
    find . -path ./lost+found -prune -o -type l -printf '%p -> %l\n' |
      LC_ALL=C sort &&
    find . -path ./lost+found -prune -o -type f -print0 | LC_ALL=C sort -z |
      xargs -0r sha256sum )
}

# The filesystems the matrix knows, in the order it tries them.
VM_FILESYSTEMS="ext2 ext3 ext4 xfs btrfs vfat exfat ntfs iso9660 squashfs
  erofs f2fs jfs udf minix"

# vm_plain FS: true if FS holds no symlinks or hard links.
vm_plain ()
{
  case "$1" in vfat|exfat|udf) return 0 ;; *) return 1 ;; esac
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
      mkfs.f2fs -q -f "$out" >/dev/null && sload.f2fs -f "$tree" "$out" >/dev/null ;;
    *)
      echo "no way to fill $fs here without mounting it"; return 1 ;;
  esac || { echo "making $fs failed"; return 1; }
  # A little slack at the end: nbdkit serves whole sectors.
  truncate -s %4096 "$out"
}
