#!/bin/bash
# SPDX-License-Identifier: BSD-3-Clause
# Make the initrd of the nbd-client test guest (for
# tests/test-guest-nbd-client.sh), which boots the helper guest's
# kernel: busybox and the modules for virtio-net, nbd, device-mapper and
# ext4 taken from the helper guest's initrd (guests/linux/build-guest),
# this machine's nbd-client, kpartx and nbdkit (with the nbdkit filters
# qemount uses), the qemount command and plugin of this build, all with
# their libraries, the IMAGEs in /images, and
# tests/nbd-client-guest-init as /init.  The helper guest itself stays
# as it is: this is a guest for the tests only.
#
# usage: [NBDKIT_PRELOAD=LIB[:LIB...]] nbd-client-guest.sh HELPER-INITRD QEMOUNT PLUGIN OUTPUT [IMAGE...]

set -euo pipefail

die () { echo "nbd-client-guest.sh: $*" >&2; exit 1; }

[ $# -ge 4 ] ||
  die "usage: nbd-client-guest.sh HELPER-INITRD QEMOUNT PLUGIN OUTPUT [IMAGE...]"
helper=$1 qemount=$2 plugin=$3 out=$4
shift 4
here=$(cd "$(dirname "$0")" && pwd)

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/helper" "$work/root"/{bin,dev,proc,sys,mnt,tmp,run,etc,images,lib/modules}
(cd "$work/helper" &&
   cpio --quiet -id '*bin/busybox' '*etc/modules.deps' '*lib/modules/*') < "$helper" ||
  die "$helper: not a cpio archive"
root=$work/root

# The modules the init loads, each line of modules.deps naming a module
# and the files to load for it, in order.
for m in virtio_mmio virtio_net nbd dm_mod ext4; do
  line=$(grep "^$m " "$work/helper/etc/modules.deps") ||
    die "$helper has no $m module (an older helper guest: make guest)"
  echo "$line" >> "$root/etc/modules.deps"
  for ko in ${line#* }; do
    cp "$work/helper/lib/modules/$ko" "$root/lib/modules/"
  done
done
cp "$work/helper/bin/busybox" "$root/bin/busybox"

progs=
for tool in nbd-client kpartx; do
  p=$(PATH=$PATH:/usr/sbin:/sbin command -v "$tool") ||
    die "$tool is not installed"
  cp "$p" "$root/bin/$tool"
  progs="$progs $p"
done
# nbdkit itself, not a test's wrapper of it in PATH.  An instrumented
# plugin (a sanitized build) needs the runtime preloaded into nbdkit, as
# on the host: NBDKIT_PRELOAD lists those libraries, and /bin/nbdkit
# becomes a wrapper that preloads them into the real one, which keeps
# its name (qemount knows its nbdkit by the name).
nbdkit=$(nbdkit --dump-config | sed -n 's/^bindir=//p')/nbdkit
[ -x "$nbdkit" ] || die "nbdkit is not installed"
progs="$progs $nbdkit"
if [ -n "${NBDKIT_PRELOAD:-}" ]; then
  mkdir -p "$root/opt/nbdkit"
  cp "$nbdkit" "$root/opt/nbdkit/nbdkit"
  printf '#!/bin/busybox sh\nexport LD_PRELOAD=%s ASAN_OPTIONS=detect_leaks=0\nexec /opt/nbdkit/nbdkit "$@"\n' \
    "$NBDKIT_PRELOAD" > "$root/bin/nbdkit"
  chmod 755 "$root/bin/nbdkit"
  for lib in ${NBDKIT_PRELOAD//:/ }; do
    mkdir -p "$root$(dirname "$lib")"
    cp "$lib" "$root$lib"
    progs="$progs $lib"
  done
else
  cp "$nbdkit" "$root/bin/nbdkit"
fi
# qemount where a build tree has it, so that it finds its plugin as it
# does there (find_ours in server/proc.c); the one filter it uses
# (--filter=offset, server/attach.c) where nbdkit looks for it.
mkdir -p "$root/opt/qemount/server" "$root/opt/qemount/plugins/qemount/.libs"
cp "$qemount" "$root/opt/qemount/server/qemount"
cp "$plugin" "$root/opt/qemount/plugins/qemount/.libs/nbdkit-qemount-plugin.so"
progs="$progs $qemount $plugin"
filterdir=$(nbdkit --dump-config | sed -n 's/^filterdir=//p')
mkdir -p "$root$filterdir"
cp "$filterdir/nbdkit-offset-filter.so" "$root$filterdir/" ||
  die "nbdkit has no offset filter"
progs="$progs $filterdir/nbdkit-offset-filter.so"
for p in $progs; do
  ldd "$p" > /dev/null || die "$p: not a dynamically linked program"
done
for lib in $(for p in $progs; do ldd "$p"; done | grep -o '/[^ ]*' | sort -u); do
  mkdir -p "$root$(dirname "$lib")"
  cp -L "$lib" "$root$lib"
done
for image in "$@"; do
  cp "$image" "$root/images/"
done
cp "$here/nbd-client-guest-init" "$root/init"
chmod 755 "$root/init"

(cd "$root" && find . | LC_ALL=C sort | cpio --quiet -o -H newc -R 0:0) > "$out"
