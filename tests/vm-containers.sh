# SPDX-License-Identifier: BSD-3-Clause
# Container images (LVM, md RAID1, LUKS) for the helper-VM tests
# (tests/test-qemount-vm-containers.sh) and scripts/vm-matrix, built
# without the kernel's device-mapper or md driver, which the host may
# not have: LVM metadata with lvm --driverloaded n on a loop device, the
# md superblock by tests/mkmd.py, the LUKS2 header by cryptsetup on a
# plain file and the data encrypted by tests/mkluks.py.  Each wraps a
# filesystem image (vm_make_fs of tests/vm-functions.sh), so the
# contents compare with vm_manifest as the plain filesystems do.  Each
# prints the reason and returns 1 when this machine cannot make it.
# Plain bash, sourced after tests/vm-functions.sh; $top_srcdir, else
# the current directory, is the source tree.

vm_containers_src=${top_srcdir:-.}

# vm_make_lvm OUT VG LV1:FSIMG1 [LV2:FSIMG2...]: a physical volume on the
# whole of the raw image OUT with one volume group VG, each logical
# volume (linear, one segment) holding a copy of its filesystem image.
vm_make_lvm ()
{
  local out=$1 vg=$2 size=8 loop cfg spec lv fsimg mib pe_start extent
  local range first
  shift 2
  command -v lvm >/dev/null || { echo "no lvm (lvm2)"; return 1; }
  [ "$(id -u)" = 0 ] || { echo "making LVM needs root (a loop device)"; return 1; }
  for spec in "$@"; do
    mib=$(( ($(stat -c %s "${spec#*:}") + 4194303) / 4194304 * 4 ))
    size=$((size + mib))
  done
  rm -f "$out"
  truncate -s "${size}M" "$out"
  loop=$(losetup -f --show "$out") || { echo "no loop device"; return 1; }
  # Only this loop device, no udev, no backups in /etc/lvm; activation
  # off (--driverloaded n): the host needs no device-mapper.
  cfg="devices { filter = [ \"a|^$loop\$|\", \"r|.*|\" ] use_devicesfile = 0
       obtain_device_list_from_udev = 0 }
       activation { udev_sync = 0 udev_rules = 0 }
       backup { backup = 0 archive = 0 }"
  vm_lvm () { LVM_SUPPRESS_FD_WARNINGS=1 lvm "$@" --config "$cfg" --driverloaded n; }
  if ! { vm_lvm pvcreate -q "$loop" && vm_lvm vgcreate -q -s 4M "$vg" "$loop"; } \
       > "$out.log" 2>&1; then
    losetup -d "$loop"
    echo "pvcreate/vgcreate failed: $(tail -n 1 "$out.log")"; rm -f "$out.log"
    return 1
  fi
  pe_start=$(vm_lvm pvs --noheadings --units b --nosuffix -o pe_start "$loop" 2>/dev/null | tr -d ' ')
  extent=$(vm_lvm vgs --noheadings --units b --nosuffix -o vg_extent_size "$vg" 2>/dev/null | tr -d ' ')
  for spec in "$@"; do
    lv=${spec%%:*} fsimg=${spec#*:}
    mib=$(( ($(stat -c %s "$fsimg") + 4194303) / 4194304 * 4 ))
    if ! vm_lvm lvcreate -q -an -Zn -L "${mib}M" -n "$lv" "$vg" >> "$out.log" 2>&1; then
      losetup -d "$loop"
      echo "lvcreate failed: $(tail -n 1 "$out.log")"; rm -f "$out.log"
      return 1
    fi
    # "/dev/loop0:3-6": extents 3 to 6 of the physical volume.
    range=$(vm_lvm lvs --noheadings -o seg_pe_ranges "$vg/$lv" 2>/dev/null | tr -d ' ')
    first=${range##*:}; first=${first%-*}
    dd if="$fsimg" of="$out" bs=1M oflag=seek_bytes conv=notrunc,sparse status=none \
      seek=$((pe_start + first * extent))
  done
  losetup -d "$loop"
  rm -f "$out.log"
  unset -f vm_lvm
}

# vm_make_md OUT PAYLOAD: OUT is a single member of a degraded two-disk
# md RAID1 (superblock 1.2) holding PAYLOAD.
vm_make_md ()
{
  /usr/bin/python3 "$vm_containers_src/tests/mkmd.py" "$1" "$2" ||
    { echo "mkmd.py failed"; return 1; }
}

# vm_make_luks OUT PAYLOAD KEYFILE: a LUKS2 container (aes-xts-plain64,
# PBKDF2 with few iterations so that the guest opens it at once) whose
# passphrase is the contents of KEYFILE, holding PAYLOAD.
vm_make_luks ()
{
  local out=$1 payload=$2 key=$3 offset sector size
  command -v cryptsetup >/dev/null || { echo "no cryptsetup"; return 1; }
  /usr/bin/python3 -c 'import cryptography' 2>/dev/null ||
    { echo "no python3-cryptography"; return 1; }
  size=$(stat -c %s "$payload")
  rm -f "$out"
  truncate -s $((size + 2097152)) "$out"
  cryptsetup luksFormat -q --batch-mode --type luks2 --pbkdf pbkdf2 \
    --pbkdf-force-iterations 1000 --sector-size 512 --offset 4096 \
    --key-file "$key" "$out" 2> "$out.log" ||
    { echo "luksFormat failed: $(tail -n 1 "$out.log")"; rm -f "$out.log"; return 1; }
  rm -f "$out.log"
  offset=$(cryptsetup luksDump "$out" | sed -n 's/^[[:space:]]*offset: \([0-9]*\) \[bytes\]/\1/p' | head -n 1)
  sector=$(cryptsetup luksDump "$out" | sed -n 's/^[[:space:]]*sector: \([0-9]*\) \[bytes\]/\1/p' | head -n 1)
  [ -n "$offset" ] && [ -n "$sector" ] || { echo "cannot read the LUKS2 header"; return 1; }
  cryptsetup luksDump --dump-volume-key --batch-mode --key-file "$key" "$out" |
    sed -n '/^MK dump:/,$ { s/^MK dump://; /^[[:space:]]*[0-9a-f][0-9a-f] /p }' |
    /usr/bin/python3 "$vm_containers_src/tests/mkluks.py" "$out" "$offset" "$sector" "$payload" ||
    { echo "mkluks.py failed"; return 1; }
}

# The container rows of scripts/vm-matrix, each an ext4 filesystem
# holding the tree inside the container.
VM_CONTAINERS="lvm md-raid1 luks"

# vm_make_container NAME TREE OUT: the container NAME (of VM_CONTAINERS)
# on the whole of the raw image OUT, holding an ext4 with TREE; sets
# vm_opts to the options qemount needs for it (--lv, --key-file with a
# key file next to OUT).
vm_make_container ()
{
  local name=$1 tree=$2 out=$3 why
  vm_opts=()
  why=$(vm_make_fs ext4 "$tree" "$out.ext4") || { echo "$why"; return 1; }
  case "$name" in
    lvm)
      vm_make_lvm "$out" vg0 root:"$out.ext4" || { rm -f "$out.ext4"; return 1; }
      vm_opts=(--lv vg0/root) ;;
    md-raid1)
      vm_make_md "$out" "$out.ext4" || { rm -f "$out.ext4"; return 1; } ;;
    luks)
      printf '%s' "vm-matrix passphrase" > "$out.key"
      vm_make_luks "$out" "$out.ext4" "$out.key" || { rm -f "$out.ext4"; return 1; }
      vm_opts=(--key-file "$out.key") ;;
    *) echo "no container $name"; return 1 ;;
  esac
  rm -f "$out.ext4"
}
