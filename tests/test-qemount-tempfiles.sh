#!/usr/bin/env bash
# SPDX-License-Identifier: BSD-3-Clause
# Outputs are created under names nobody can plant: qemount snapshot
# create and commit, overlays and qemount extract write a new file beside
# the output (unnamed, or under a random name created exclusively) and
# only then give it its name.  A symlink to a victim file and a file of
# another user planted at OUTPUT.tmp, where extract used to write, are
# left as they are, the victim is untouched, and the output is complete,
# the caller's, with the mode the umask gives.  Extract needs the helper
# VM, so it comes last.
source ./tests/qemount-functions.sh
requires nbdkit
requires nbdcopy
requires mkfs.ext4

make_tree "$tmp/tree"
manifest "$tmp/tree" > "$tmp/tree.manifest"
truncate -s 16M "$tmp/disk.img"
mkfs.ext4 -q -F -d "$tmp/tree" "$tmp/disk.img"
chmod 600 "$tmp/disk.img"
echo "the victim: must stay as it is" > "$tmp/victim"
victim=$(sha256sum < "$tmp/victim")
mkdir "$tmp/out"
me=$(id -u)

# plant NAME symlink|file: out/NAME.tmp, a symlink to the victim or a
# file anyone may write (another user's where we may give it away).
plant ()
{
  case "$2" in
    symlink) ln -s ../victim "$tmp/out/$1.tmp" ;;
    file)
      echo "planted" > "$tmp/out/$1.tmp"
      chmod 666 "$tmp/out/$1.tmp"
      [ "$me" != 0 ] || chown 65534:65534 "$tmp/out/$1.tmp" ;;
  esac
}

# planted_intact NAME KIND: the victim and out/NAME.tmp as they were.
planted_intact ()
{
  local f="$tmp/out/$1.tmp"
  [ "$(sha256sum < "$tmp/victim")" = "$victim" ] ||
    fail "$1: the victim file was written through the planted $2"
  case "$2" in
    symlink) [ "$(readlink "$f")" = ../victim ] ;;
    file)
      [ "$(cat "$f" 2>/dev/null)" = planted ] &&
        [ "$(stat -c %a "$f")" = 666 ] ;;
  esac || fail "$1: the planted $2 $1.tmp was changed"
}

# new_file NAME MODE: out/NAME is the caller's with MODE.
new_file ()
{
  [ -f "$tmp/out/$1" ] && [ ! -L "$tmp/out/$1" ] || fail "$1: no output"
  [ "$(stat -c %u "$tmp/out/$1")" = "$me" ] ||
    fail "$1: owned by uid $(stat -c %u "$tmp/out/$1"), not by the caller ($me)"
  [ "$(stat -c %a "$tmp/out/$1")" = "$2" ] ||
    fail "$1: mode $(stat -c %a "$tmp/out/$1"), expected $2 from the umask"
}

# only FILE...: out holds exactly these (no temporary file is left).
only ()
{
  [ "$(ls -A "$tmp/out" | LC_ALL=C sort | tr '\n' ' ')" = "$* " ] ||
    { ls -la "$tmp/out" >&2; fail "out/ should hold only: $*"; }
}

# same_disk QSNAP: the disk stream reads back as disk.img.
same_disk ()
{
  rm -f "$tmp/back.raw"
  qemount_nbdkit -r --run 'nbdcopy "$uri" "$tmp/back.raw"' -- file="$1" ||
    fail "$1: cannot read it back"
  cmp "$tmp/disk.img" "$tmp/back.raw" || fail "$1: does not read back as the image"
}
export tmp

# snapshot create, umask 002: mode 664.
plant s.qsnap symlink
( umask 002 && qemount snapshot create "$tmp/disk.img" "$tmp/out/s.qsnap" >/dev/null ) ||
  fail "snapshot create failed"
planted_intact s.qsnap symlink
new_file s.qsnap 664
same_disk "$tmp/out/s.qsnap"
only s.qsnap s.qsnap.tmp

# The same where the filesystem has no unnamed files: the named
# fallback (tests/no-tmpfile-shim.c).
gcc -shared -fPIC -o "$tmp/no-tmpfile.so" "$top_srcdir/tests/no-tmpfile-shim.c" -ldl ||
  fail "cannot build tests/no-tmpfile-shim.c"
preload=$tmp/no-tmpfile.so
[ "$SANITIZERS" != yes ] || preload="$(gcc -print-file-name=libasan.so):$preload"
plant n.qsnap file
( umask 002 && export LD_PRELOAD="$preload" NO_TMPFILE_LOG="$tmp/no-tmpfile.log" &&
  qemount snapshot create "$tmp/disk.img" "$tmp/out/n.qsnap" >/dev/null ) ||
  fail "snapshot create without O_TMPFILE failed"
[ -s "$tmp/no-tmpfile.log" ] || fail "the shim did not refuse O_TMPFILE: fallback not tested"
planted_intact n.qsnap file
new_file n.qsnap 664
same_disk "$tmp/out/n.qsnap"
only n.qsnap n.qsnap.tmp s.qsnap s.qsnap.tmp

# An overlay (mode 0600 whatever the umask: it holds the image's data)
# and snapshot commit, umask 077: mode 600.
plant c.qsnap file
plant c.ovl symlink
( umask 002 &&
  qemount_nbdkit --run 'nbdcopy "$tmp/disk.img" "$uri"' -- \
    file="$tmp/out/s.qsnap" overlay="$tmp/out/c.ovl" </dev/null ) ||
  fail "writing through a new overlay failed"
planted_intact c.ovl symlink
new_file c.ovl 600
( umask 077 && qemount snapshot commit --base "$tmp/out/s.qsnap" \
    --overlay "$tmp/out/c.ovl" --output "$tmp/out/c.qsnap" >/dev/null ) ||
  fail "snapshot commit failed"
planted_intact c.qsnap file
new_file c.qsnap 600
same_disk "$tmp/out/c.qsnap"
only c.ovl c.ovl.tmp c.qsnap c.qsnap.tmp n.qsnap n.qsnap.tmp s.qsnap s.qsnap.tmp
rm -f "$tmp/out"/*
echo "ok snapshot create (also without O_TMPFILE), commit, overlay"

# extract, with a symlink planted (umask 002: mode 664), then with a
# file (umask 077: 600).
requires_guest
plant x.tar symlink
( umask 002 && qemount extract "$tmp/disk.img" -o "$tmp/out/x.tar" ) ||
  fail "extract failed"
planted_intact x.tar symlink
new_file x.tar 664
mkdir "$tmp/x"
tar -C "$tmp/x" -xf "$tmp/out/x.tar" || fail "the tar does not unpack"
manifest "$tmp/x" | diff -u "$tmp/tree.manifest" - ||
  fail "the extracted files differ from the image's"
only x.tar x.tar.tmp
rm -f "$tmp/out"/*

plant y.tar file
( umask 077 && qemount extract "$tmp/disk.img" -o "$tmp/out/y.tar" ) ||
  fail "extract failed"
planted_intact y.tar file
new_file y.tar 600
tar -tf "$tmp/out/y.tar" | grep -qx './hello.txt' || fail "y.tar: not the image's tar"
only y.tar y.tar.tmp
vm_assert_clean
echo "ok extract"
