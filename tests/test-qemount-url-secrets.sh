#!/usr/bin/env bash
# SPDX-License-Identifier: BSD-3-Clause
# A URL with a password and a query in it (nginx asking for basic
# authentication): qemount mount --raw --foreground reads the image
# through it, and neither secret shows in any command line (qemount's
# own included), in the state directory but its location file (mode
# 0600), in qemount info, qemount list or nbdkit's log; a wrong password
# exits 4 without showing it.  nbdkit qemount file=+FILE reads the URL
# from FILE.
source ./tests/qemount-functions.sh
source "$top_srcdir/tests/remote-functions.sh"
requires_root
requires nbdkit
requires nbdcopy
requires curl
requires jq
requires openssl
requires qemu-img

mnt=$tmp/mnt
mkdir "$tmp/www" "$mnt"
head -c 3M /dev/urandom > "$tmp/disk.raw"
qemu-img convert -f raw -O qcow2 "$tmp/disk.raw" "$tmp/www/img.qcow2"
echo "user:$(openssl passwd -apr1 S3cretPW)" > "$tmp/htpasswd"
nginx_start "$tmp/www" "auth_basic qemount; auth_basic_user_file $tmp/htpasswd;"
port=${http##*:}
url="http://user:S3cretPW@127.0.0.1:$port/img.qcow2?tok=Q9secret"
shown=$http/img.qcow2

# no_secret WHAT FILE...: neither secret is in the files.
no_secret ()
{
  local what=$1
  shift
  if grep -E 'S3cretPW|Q9secret|WrongPW' "$@"; then
    fail "$what shows a secret"
  fi
}

# The plugin, given the URL in a file.
printf '%s\n' "$url" > "$tmp/location"
out="$tmp/copy" qemount_nbdkit -r --run 'nbdcopy "$uri" "$out"' -- \
  "file=+$tmp/location" 2>"$tmp/err" </dev/null ||
  { cat "$tmp/err" >&2; fail "nbdkit qemount file=+FILE failed"; }
cmp -s "$tmp/copy" "$tmp/disk.raw" || fail "nbdkit qemount file=+FILE: wrong bytes"
expect 1 "file=+$tmp/nowhere: No such file or directory" \
  qemount_nbdkit -r --run true -- "file=+$tmp/nowhere"

qemount info --json "$url" > "$tmp/info.json" || fail "info failed"
[ "$(jq -r .image "$tmp/info.json")" = "$shown" ] ||
  fail "info: image is not $shown: $(jq -r .image "$tmp/info.json")"
no_secret "qemount info" "$tmp/info.json"

# --foreground: qemount itself stays while mounted.
env $QEMOUNT_ENV "$QEMOUNT" mount --raw --foreground "$url" "$mnt" \
  2>"$tmp/fg.err" &
fg_pid=$!
stop_fg () { kill "$fg_pid" 2>/dev/null || :; wait "$fg_pid" 2>/dev/null || :; }
on_exit stop_fg
is_mounted ()
{
  qemount list --json |
    jq -e --arg d "$mnt" '.[] | select(.mountpoint == $d and .status == "mounted")' \
      >/dev/null
}
wait_for is_mounted
cmp "$mnt/disk" "$tmp/disk.raw" || fail "mount --raw: DIR/disk differs"
pids=$(mount_pids "$mnt")

ps -eo args > "$tmp/ps"
no_secret "the process list" "$tmp/ps"
grep -F "mount --raw --foreground $shown" "$tmp/ps" >/dev/null ||
  fail "qemount's command line does not show $shown: $(grep -F mount "$tmp/ps")"
qemount list > "$tmp/list"
qemount list --json > "$tmp/list.json"
no_secret "qemount list" "$tmp/list" "$tmp/list.json"
[ "$(jq -r '.[0].image' "$tmp/list.json")" = "$shown" ] ||
  fail "list --json: image is not $shown"
grep -qF "$shown" "$tmp/list" || fail "qemount list does not name $shown"
state=$(jq -r '.[0].state_dir' "$tmp/list.json")
[ "$(stat -c %a "$state/location")" = 600 ] ||
  fail "the location file is mode $(stat -c %a "$state/location")"
[ "$(cat "$state/location")" = "$url" ] || fail "the location file is not the URL"
find "$state" -type f ! -name location > "$tmp/files"
grep -q nbdkit.log "$tmp/files" || fail "no nbdkit.log in $state"
mapfile -t files < "$tmp/files"
no_secret "the state directory" "${files[@]}"

qemount umount "$mnt" || fail "umount failed"
status=0
wait "$fg_pid" || status=$?
[ "$status" = 0 ] || { cat "$tmp/fg.err" >&2; fail "--foreground: exit status $status"; }
no_secret "qemount mount's messages" "$tmp/fg.err"
assert_clean "$mnt" $pids

expect 4 "$shown: opening: HTTP status 401" \
  qemount mount --raw "http://user:WrongPW@127.0.0.1:$port/img.qcow2?tok=Q9secret" "$mnt"
no_secret "a refused mount's messages" "$tmp/err"
assert_clean "$mnt"

# Snapshots read from such a URL say where from without the secrets.
qemount snapshot create "$url" "$tmp/s.qsnap" > "$tmp/create.out" 2>&1 ||
  { cat "$tmp/create.out" >&2; fail "snapshot create from the URL failed"; }
grep -qF "$shown -> $tmp/s.qsnap:" "$tmp/create.out" ||
  { cat "$tmp/create.out" >&2; fail "snapshot create: the summary does not name $shown"; }
no_secret "snapshot create's output" "$tmp/create.out"
qemount_nbdkit -r -- file="$tmp/s.qsnap" --run "nbdcopy \"\$uri\" '$tmp/snap.raw'" ||
  fail "the snapshot does not read"
cmp -s "$tmp/snap.raw" "$tmp/disk.raw" || fail "the snapshot differs from the image"
echo "PASS: no secret of a URL shown while it is mounted or made a snapshot of"
