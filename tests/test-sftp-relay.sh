#!/usr/bin/env bash
# SPDX-License-Identifier: BSD-3-Clause
# qemount-sftp-relay, the guest's front for sftp-server, run on the host
# between sshfs -o passive and sftp-server (tests/sftp-relay-check.py
# joins the two with a socket pair, as QEMU's port does): files
# read through it are byte for byte the files, at any offset and length
# and past the end, and the reads are answered by the relay itself (its
# count says so).  Read-write: every write read straight back is seen,
# however the relay's reads and sftp-server's writes interleave.
source ./tests/functions.sh
requires sshfs
requires fusermount3
sftp_server=/usr/lib/openssh/sftp-server
[ -x "$sftp_server" ] || skip "$sftp_server is not installed"
relay=$top_builddir/guests/linux/qemount-sftp-relay
[ -x "$relay" ] || fail "$relay is not built"

src=$tmp/src mnt=$tmp/mnt
mkdir -p "$src/dir with spaces" "$mnt"
head -c $((5 * 1024 * 1024 + 12345)) /dev/urandom > "$src/random.bin"
echo small > "$src/dir with spaces/small file"
: > "$src/empty"
truncate -s 3M "$src/sparse"
printf 'middle' | dd of="$src/sparse" bs=1 seek=1500000 conv=notrunc status=none
cp "$src/random.bin" "$src/rw.bin"
cp "$src/random.bin" "$tmp/expected.bin"

relay_pid=
stop_relay ()
{
  if mountpoint -q "$mnt"; then fusermount3 -u "$mnt" || fusermount3 -uz "$mnt"; fi
  if [ -n "$relay_pid" ]; then wait "$relay_pid" || :; relay_pid=; fi
}
on_exit stop_relay

# start_relay SSHFS-OPTIONS [--slow]: mount $src on $mnt through the
# relay.
start_relay ()
{
  $PYTHON "$top_srcdir/tests/sftp-relay-check.py" serve "$relay" \
    "$sftp_server" "$src" "$mnt" "$1" "$tmp/relay.err" ${2:-} &
  relay_pid=$!
  for _ in $(seq 100); do
    mountpoint -q "$mnt" && return 0
    sleep 0.1
  done
  cat "$tmp/relay.err" >&2
  fail "sshfs through the relay did not mount"
}

# answered: the relay's count of reads it answered itself (after stop).
answered ()
{
  sed -n 's/^qemount-sftp-relay: \([0-9]*\) reads answered here.*/\1/p' "$tmp/relay.err"
}

# piece FILE OFFSET LENGTH: bytes of FILE, by byte offsets.
piece ()
{
  dd if="$1" bs=65536 iflag=skip_bytes,count_bytes skip="$2" count="$3" status=none
}

start_relay ro
for f in random.bin "dir with spaces/small file" empty sparse; do
  cmp "$src/$f" "$mnt/$f" || fail "$f differs when read through the relay"
done
# direct_io passes each read's offset and length to the relay as is:
# misaligned, across 64 KiB, the last bytes, and past the end.
size=$(stat -c %s "$src/random.bin")
for range in "1 1" "4095 4097" "65535 65538" "12345 200000" \
             "$((size - 100)) 100" "$((size - 100)) 5000" "$size 10" \
             "$((size + 4096)) 10"; do
  set -- $range
  cmp <(piece "$src/random.bin" "$1" "$2") <(piece "$mnt/random.bin" "$1" "$2") ||
    fail "random.bin: $2 bytes at $1 differ through the relay"
done
[ -z "$(piece "$mnt/random.bin" "$((size + 4096))" 10 | head -c 1)" ] ||
  fail "a read past the end returned data"
stop_relay
n=$(answered)
[ "${n:-0}" -gt 0 ] || fail "the relay answered no reads itself: $(cat "$tmp/relay.err")"
grep -q ' 0 forwarded$' "$tmp/relay.err" ||
  fail "the relay forwarded reads of a read-only mount: $(cat "$tmp/relay.err")"

# Read-write: sshfs does not wait for a write's answer, so a read right
# after a write reaches the relay while the write is with sftp-server
# (held there by --slow's delay).
start_relay rw --slow
$PYTHON "$top_srcdir/tests/sftp-relay-check.py" rw "$mnt/rw.bin" "$tmp/expected.bin" ||
  fail "the rw mount through the relay lost a write"
echo "appended" >> "$mnt/rw.bin"
echo "appended" >> "$tmp/expected.bin"
cmp "$tmp/expected.bin" "$mnt/rw.bin" || fail "rw.bin differs after writes and an append"
cmp "$src/random.bin" "$mnt/random.bin" || fail "random.bin differs in the rw mount"
stop_relay
cmp "$tmp/expected.bin" "$src/rw.bin" || fail "rw.bin on disk is not what was written"
n=$(answered)
[ "${n:-0}" -gt 0 ] || fail "the relay answered no reads in the rw mount: $(cat "$tmp/relay.err")"
! pgrep -f "$sftp_server -d $src" > /dev/null || fail "sftp-server left running"
echo "PASS: reads through the relay match; writes are seen by the reads after them"
