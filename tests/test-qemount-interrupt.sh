#!/usr/bin/env bash
# SPDX-License-Identifier: BSD-3-Clause
# Interrupts: SIGINT in the middle of qemount mount tears down what was
# started; --foreground unmounts on SIGINT or SIGTERM, and exits when
# qemount umount is run from another shell.
source ./tests/qemount-functions.sh
setup_mount_test

# SIGINT while nbdfuse is starting (a wrapper makes it slow), after
# nbdkit is up: exit status 130, nothing left.
mkdir -p "$tmp/slow"
cat > "$tmp/slow/nbdfuse" <<EOS
#!/bin/sh
sleep 2
exec $(command -v nbdfuse) "\$@"
EOS
chmod +x "$tmp/slow/nbdfuse"
# (env, not the qemount function: $! must be qemount, not a subshell)
PATH="$tmp/slow:$PATH" env $QEMOUNT_ENV "$QEMOUNT" mount "$tmp/mbr.img" "$mnt" 2>"$tmp/err" &
pid=$!
nbdkit_running () { compgen -G "$QEMOUNT_RUNTIME_DIR/mount.*/nbdkit.pid" >/dev/null; }
wait_for nbdkit_running
sleep 0.2
kill -INT $pid
status=0
wait $pid || status=$?
[ $status = 130 ] || { cat "$tmp/err"; fail "interrupted mount: exit status $status, expected 130"; }
grep -q "interrupted: stopping what was started" "$tmp/err" || fail "no message: $(cat "$tmp/err")"
assert_clean "$mnt"
[ -z "$(ls -A "$mnt")" ] || fail "$mnt is not empty after an interrupted mount"

# --foreground: mounted until SIGINT, and SIGTERM.
for sig in INT TERM; do
  env $QEMOUNT_ENV "$QEMOUNT" mount --foreground "$tmp/mbr.img" "$mnt" 2>"$tmp/err" &
  pid=$!
  wait_for mountpoint -q "$mnt"
  pids=$(mount_pids "$mnt")
  manifest "$mnt" | diff -u "$tmp/tree.manifest" - || fail "--foreground: files differ"
  kill -$sig $pid
  status=0
  wait $pid || status=$?
  [ $status = 0 ] || { cat "$tmp/err"; fail "--foreground, SIG$sig: exit status $status"; }
  assert_clean "$mnt" $pids
done

# --foreground, unmounted from elsewhere: it notices and exits.
env $QEMOUNT_ENV "$QEMOUNT" mount --foreground "$tmp/mbr.img" "$mnt" 2>"$tmp/err" &
pid=$!
wait_for mountpoint -q "$mnt"
qemount umount "$mnt"
gone () { ! kill -0 $pid 2>/dev/null; }
wait_for gone
wait $pid || fail "--foreground after umount elsewhere: exit status $?"
assert_clean "$mnt"
echo "PASS: interrupted mount, --foreground"
