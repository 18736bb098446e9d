#!/usr/bin/env bash
# SPDX-License-Identifier: BSD-3-Clause
# README's flow for a kernel with nbd, tested in a QEMU guest (this host
# has no nbd module; tests/test-qemount-nbd-client.sh runs qemount's
# own nbd-client attach where one has): `nbdkit -r qemount file=IMAGE`
# here, and in the guest nbd-client, then mount /dev/nbd0p1 for
# partition 1 of a GPT qcow2 and of a ploop image, and kpartx, then
# mount /dev/mapper/nbd0p5, for the logical partition of a raw MBR
# image.  Then qemount's own kernel path, which prefers nbd-client where
# /dev/nbd0 exists: in the guest, `qemount mount --via kernel` of an MBR
# qcow2 (qemount picks its ext4 partition 5, served through nbdkit's
# offset filter), of its ploop copy with --partition 5 and of a qcow2
# of a whole-disk ext4 (/dev/nbdN mounted itself), `qemount list
# --json` checked here (nbd-client on a /dev/nbdN, the partition), and
# `qemount umount`, after which the guest checks that no nbdkit, nbd
# client, mount or state is left.  Every file is compared with the tree
# that went in, and the guest checks that taking it down left no nbd or
# device-mapper device (tests/nbd-client-guest-init).  One boot for the
# six.
#
# The guest's network is QEMU's user-mode one with restrict=on: it
# reaches nothing but three forwards, 10.0.2.100:10809-10811, each a
# socat per connection to one nbdkit on a port of 127.0.0.1.
source ./tests/qemount-functions.sh
requires nbdkit
requires qemu-system-x86_64
requires qemu-img
requires socat
requires cpio
for t in nbd-client kpartx; do
  PATH=$PATH:/usr/sbin:/sbin command -v "$t" >/dev/null || skip "$t is not installed"
done

# The helper guest's kernel and modules; one built before it carried
# nbd and virtio_net is rebuilt, as make guest would.
: "${QEMOUNT_GUEST_DIR:=$top_srcdir/build/guest}"
if [ ! -f "$QEMOUNT_GUEST_DIR/vmlinux" ] ||
   ! cpio --quiet -t < "$QEMOUNT_GUEST_DIR/initrd" 2>/dev/null | grep -qx lib/modules/nbd.ko; then
  "$top_srcdir/guests/linux/build-guest" "$QEMOUNT_GUEST_DIR" > "$tmp/guest.log" 2>&1 ||
    skip "the helper VM cannot be built here: $(tail -n 1 "$tmp/guest.log")"
fi

make_images
convert_images gpt mbr
qemu-img convert -O qcow2 "$tmp/whole.img" "$tmp/whole.qcow2"
manifest "$tmp/tree" | LC_ALL=C sort > "$tmp/expected"
NBDKIT_PRELOAD=${nbdkit_env#LD_PRELOAD=} \
  "$top_srcdir/tests/nbd-client-guest.sh" "$QEMOUNT_GUEST_DIR/initrd" \
    "$QEMOUNT" "$QEMOUNT_PLUGIN" "$tmp/initrd" "$tmp/mbr.qcow2" "$tmp/mbr.hdd" \
    "$tmp/whole.qcow2" ||
  fail "cannot make the test guest's initrd"
qemount_jobs=qemount-qcow2:mbr.qcow2,qemount-ploop:mbr.hdd:5,qemount-whole:whole.qcow2

servers=
stop_servers ()
{
  local pid
  for pid in $servers; do kill "$pid" 2>/dev/null; done
  return 0
}
on_exit stop_servers

# serve NAME IMAGE DEV: nbdkit for IMAGE on a free port of 127.0.0.1,
# reached by the guest at 10.0.2.100:(10809 + the number of jobs
# before), which mounts DEV.  A port another process took is tried
# again elsewhere: nbdkit binds before it returns.
fwds= jobs= guest_port=10809
serve ()
{
  local name=$1 image=$2 dev=$3 port
  for _ in $(seq 20); do
    port=$((20000 + RANDOM % 40000))
    rm -f "$tmp/$name.pid"
    if nbdkit -r --port="$port" --ip-addr=127.0.0.1 -P "$tmp/$name.pid" \
         "$QEMOUNT_PLUGIN" file="$image" 2>"$tmp/$name.log"; then
      for _ in $(seq 100); do
        [ -s "$tmp/$name.pid" ] && break
        sleep 0.05
      done
      servers="$servers $(cat "$tmp/$name.pid")"
      fwds="$fwds,guestfwd=tcp:10.0.2.100:$guest_port-cmd:socat STDIO TCP:127.0.0.1:$port"
      jobs="$jobs${jobs:+,}$name:$guest_port:$dev"
      guest_port=$((guest_port + 1))
      return 0
    fi
    grep -q 'Address already in use' "$tmp/$name.log" ||
      { cat "$tmp/$name.log" >&2; fail "$name: nbdkit did not start"; }
  done
  fail "$name: no free port for nbdkit"
}
serve gpt "$tmp/gpt.qcow2" nbd0p1
serve ploop "$tmp/gpt.hdd" nbd0p1
serve mbr "$tmp/mbr.img" mapper/nbd0p5

# Under TCG the guest kernel calibrating the TSC against the emulated
# PIT can hang on a busy host (server/vm.c); x86's bogomips is twice
# the TSC rate in MHz, which tsc_early_khz tells it instead.  The
# initrd (about 85 MiB: qemount, nbdkit and their libraries) is
# unpacked next to itself, which 256 MiB cannot hold.
khz=$(awk '/^bogomips/ { printf "%d", $3 * 500; exit }' /proc/cpuinfo)
qemu-system-x86_64 -M microvm,x-option-roms=off,isa-serial=on,rtc=on \
  -accel tcg -m 512 -nodefaults -no-user-config -display none -no-reboot \
  -kernel "$QEMOUNT_GUEST_DIR/vmlinux" -initrd "$tmp/initrd" \
  -append "console=ttyS0 quiet panic=-1${khz:+ tsc_early_khz=$khz} nbdtest.jobs=$jobs nbdtest.qemount=$qemount_jobs" \
  -serial "file:$tmp/console.log" \
  -netdev "user,id=net,restrict=on$fwds" -device virtio-net-device,netdev=net \
  > "$tmp/qemu.log" 2>&1 &
qemu_pid=$!
stop_qemu () { kill "$qemu_pid" 2>/dev/null; return 0; }
on_exit stop_qemu

# The guest powers off when it is done; a hung one is stopped.
for _ in $(seq 600); do
  kill -0 "$qemu_pid" 2>/dev/null || break
  sleep 0.5
done
if kill -0 "$qemu_pid" 2>/dev/null; then
  cat "$tmp/console.log" >&2
  fail "the guest did not finish within 300 s"
fi
wait "$qemu_pid" || { cat "$tmp/qemu.log" >&2; fail "QEMU failed"; }

tr -d '\r' < "$tmp/console.log" > "$tmp/console"
for name in gpt ploop mbr qemount-qcow2 qemount-ploop qemount-whole; do
  if ! grep -qx "nbdtest: $name: done" "$tmp/console"; then
    cat "$tmp/console" >&2
    why=$(sed -n -e "s/^nbdtest: $name: error: //p" -e 's/^nbdtest: all: error: //p' \
            "$tmp/console" | head -n 1)
    fail "$name: ${why:-the guest did not get to it}"
  fi
  sed -n "s/^nbdtest: $name: file //p" "$tmp/console" | LC_ALL=C sort |
    diff -u "$tmp/expected" - || fail "$name: the files differ"
done
# NAME:PARTITION, 0 for the whole disk.
for job in qemount-qcow2:5 qemount-ploop:5 qemount-whole:0; do
  name=${job%:*} part=${job#*:}
  sed -n "s/^nbdtest: $name: list //p" "$tmp/console" > "$tmp/$name.json"
  jq -e --argjson part "$part" 'length == 1 and
         .[0].attach == "nbd-client" and
         (.[0].nbd | startswith("/dev/nbd")) and .[0].partition == $part' \
    "$tmp/$name.json" > /dev/null ||
    fail "$name: qemount did not mount partition $part with nbd-client: $(cat "$tmp/$name.json")"
done
echo "PASS: nbd-client and mount /dev/nbd0p1 of a GPT qcow2 and a ploop image, kpartx of an MBR image, qemount mount --via kernel through nbd-client, in a guest"
