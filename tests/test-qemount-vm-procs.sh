#!/usr/bin/env bash
# SPDX-License-Identifier: BSD-3-Clause
# The processes under the helper VM.  qemount list shows a VM mount's
# QEMU and sshfs and checks that each runs: one killed makes the mount
# stale, and umount cleans up after it.  qemount extract stops what it
# started when its reader goes away; killed, it takes its nbdkit and
# QEMU with it, lists as stale, and umount cleans up after it by its id.
# A guest that fails because nbdkit died says that nbdkit died.
source ./tests/qemount-functions.sh
source ./tests/vm-functions.sh
requires_guest
requires jq

vm_tree "$tmp/tree"
why=$(vm_make_fs ext4 "$tmp/tree" "$tmp/ext4.img") || skip "$why"
img=$tmp/ext4.img
mnt=$tmp/mnt
mkdir "$mnt"

# vm_pids: the nbdkit, QEMU and sshfs pids of the mount on $mnt.
vm_pids ()
{
  qemount list --json |
    jq -r --arg d "$mnt" '.[] | select(.mountpoint == $d) |
                          "\(.nbdkit_pid) \(.qemu_pid) \(.sshfs_pid)"'
}

# kill_part PROGRAM PID REASON: a VM mount whose PROGRAM (pid PID) is
# killed lists as stale for REASON, and umount cleans it up.
kill_part ()
{
  local program=$1 pid=$2 reason=$3
  kill -9 "$pid"
  gone "$pid"
  qemount list > "$tmp/list"
  grep -q "stale: .*$reason" "$tmp/list" ||
    fail "$program killed: qemount list does not say stale ($reason): $(cat "$tmp/list")"
  qemount umount "$mnt" || fail "umount after $program was killed failed"
  gone $nbdkit $qemu $sshfs
  vm_assert_clean "$mnt"
}

qemount mount "$img" "$mnt" --via vm --accel tcg || fail "mount --via vm failed"
read -r nbdkit qemu sshfs < <(vm_pids)
qemount list > "$tmp/list"
grep -q "^    via vm; nbdkit pid $nbdkit, qemu pid $qemu, sshfs pid $sshfs; id " "$tmp/list" ||
  fail "qemount list does not show the VM mount's processes: $(cat "$tmp/list")"
grep -q stale "$tmp/list" && fail "a working VM mount lists as stale: $(cat "$tmp/list")"
kill_part qemu "$qemu" "the helper VM (QEMU)"

qemount mount "$img" "$mnt" --via vm --accel tcg || fail "mount --via vm failed"
read -r nbdkit qemu sshfs < <(vm_pids)
kill_part sshfs "$sshfs" "sshfs"

# extract_pids: the nbdkit, QEMU and qemount pids and the id of the
# extract running, from qemount list --json in $tmp/during.json.
extract_pids ()
{
  jq -r '.[] | select(.mountpoint == null) |
         "\(.nbdkit_pid) \(.qemu_pid) \(.owner_pid) \(.id)"' "$tmp/during.json"
}

# The reader of extract -o - goes away once it has had some of the tar:
# the extract stops its nbdkit and QEMU and ends as killed by SIGPIPE,
# as filters do, leaving nothing.  (The pids are read while it runs:
# the group keeps the pipe open after head is done.)
qemount extract "$img" --accel tcg -o - 2> "$tmp/err" |
  { head -c 100000 > /dev/null; qemount list --json > "$tmp/during.json"; }
status=${PIPESTATUS[0]}
read -r nbdkit qemu owner id < <(extract_pids)
[ -n "$owner" ] || fail "qemount list did not show the extract: $(cat "$tmp/during.json")"
[ "$status" = 141 ] || fail "extract | head: exit status $status, expected 141 (SIGPIPE): $(cat "$tmp/err")"
[ ! -s "$tmp/err" ] || fail "extract | head: messages: $(cat "$tmp/err")"
gone $nbdkit $qemu
vm_assert_clean

# kill -9 of an extract: its nbdkit and QEMU do not outlive it; list
# shows what is left as a stale extract, and umount ID removes it.
mkfifo "$tmp/fifo"
# (env, not the qemount function: $! must be qemount, not a subshell)
env $QEMOUNT_ENV "$QEMOUNT" extract "$img" --accel tcg -o - > "$tmp/fifo" &
xpid=$!
exec 3< "$tmp/fifo"
head -c 100000 <&3 > /dev/null
qemount list --json > "$tmp/during.json"
read -r nbdkit qemu owner id < <(extract_pids)
[ "$owner" = "$xpid" ] || fail "qemount list does not show the extract (pid $xpid): $(cat "$tmp/during.json")"
kill -9 "$xpid"
wait "$xpid" 2>/dev/null || :   # (no "Killed" from bash)
exec 3<&-
gone $nbdkit $qemu
qemount list > "$tmp/list"
grep -qx "(extract)  $img (ext4), read-only" "$tmp/list" &&
  grep -qx "    stale: the qemount extract that ran it is gone (qemount umount $id cleans it up)" "$tmp/list" ||
  fail "qemount list does not show the killed extract as stale: $(cat "$tmp/list")"
qemount umount "$id" || fail "qemount umount $id failed"
vm_assert_clean

# nbdkit dies once the guest's init runs, before it mounts the disk (a
# wrapper holds QEMU still meanwhile): the guest then fails to mount,
# and the message is about nbdkit, not the guest's kernel.
mkdir "$tmp/qbin"
cat > "$tmp/qbin/qemu-system-x86_64" <<EOF
#!/bin/bash
for a; do [ "\${prev-}" = -pidfile ] && dir=\${a%/*}; prev=\$a; done
(
  for i in \$(seq 6000); do
    grep -qs "qemount-guest: init" "\$dir/console.log" && break
    sleep 0.02
  done
  kill -STOP \$\$
  kill -9 "\$(cat "\$dir/nbdkit.pid")"
  kill -CONT \$\$
) &
exec $(command -v qemu-system-x86_64) "\$@"
EOF
chmod +x "$tmp/qbin/qemu-system-x86_64"
PATH="$tmp/qbin:$PATH" expect 1 "$img: nbdkit, which serves the image to the helper VM, died" \
  qemount mount "$img" "$mnt" --via vm --accel tcg
grep -q "guest kernel" "$tmp/err" && fail "the guest's kernel is blamed: $(cat "$tmp/err")"
vm_assert_clean "$mnt"

echo "PASS: the helper VM's processes are listed, checked and cleaned up"
