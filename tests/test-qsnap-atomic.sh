#!/usr/bin/env bash
# SPDX-License-Identifier: BSD-3-Clause
# A snapshot appears complete or not at all: create interrupted by
# SIGINT, SIGTERM or SIGKILL (and commit killed at random moments)
# leaves nothing under the final name (and,
# but for SIGKILL where the filesystem has no unnamed files, no
# temporary file either), an existing file of that name is left as it
# was, and the command dies of the signal it got.
source ./tests/functions.sh
: "${QSNAP_TOOL:=$top_builddir/tests/qsnap-tool}"
qsnap () { env $QEMOUNT_READ_ENV "$QSNAP_TOOL" "$@"; }

# Random data at zstd level 19 on one thread: a few seconds of work.
mkdir "$tmp/in" "$tmp/out"
head -c $((64 << 20)) /dev/urandom > "$tmp/in/random.raw"
qsnap create --level 1 "$tmp/in/random.raw" "$tmp/out/old.qsnap" >/dev/null
old=$(sha256sum < "$tmp/out/old.qsnap")

interrupt ()                    # interrupt SIGNAL OUTPUT-NAME
{
  local status=0 pid
  # Not through the function: $! must be the command itself.
  env $QEMOUNT_READ_ENV "$QSNAP_TOOL" create --level 19 --jobs 1 \
    "$tmp/in/random.raw" "$tmp/out/$2" \
    >/dev/null 2>"$tmp/err" &
  pid=$!
  sleep 1
  kill -0 $pid 2>/dev/null || fail "create finished before SIG$1 could interrupt it"
  kill -s "$1" $pid
  wait $pid || status=$?
  [ $status = $((128 + $(kill -l "$1"))) ] || { cat "$tmp/err" >&2; fail "SIG$1: exit status $status"; }
}

for sig in INT TERM KILL; do
  interrupt $sig new.qsnap
  [ ! -e "$tmp/out/new.qsnap" ] || fail "SIG$sig left a file under the final name"
  if [ $sig != KILL ]; then
    grep -q "new.qsnap: interrupted" "$tmp/err" || { cat "$tmp/err" >&2; fail "SIG$sig: no message"; }
  fi

  interrupt $sig old.qsnap
  [ "$(sha256sum < "$tmp/out/old.qsnap")" = "$old" ] || fail "SIG$sig changed the existing file"

  # Nothing else in the directory.
  [ "$(ls -A "$tmp/out")" = old.qsnap ] ||
    { ls -la "$tmp/out" >&2; fail "SIG$sig left a temporary file"; }
done

# Commit killed at random moments: never a file under the final name
# unless the command finished, and then one that verifies.
qsnap create --level 1 "$tmp/in/random.raw" "$tmp/in/base.qsnap" >/dev/null
export tmp
qemount_nbdkit --run 'nbdcopy "$tmp/in/random.raw" "$uri"' -- \
  file="$tmp/in/base.qsnap" overlay="$tmp/in/changes.ovl" </dev/null ||
  fail "cannot write the overlay"
RANDOM=7
for i in $(seq 10); do
  rm -f "$tmp/out/commit.qsnap"
  env $QEMOUNT_READ_ENV "$QSNAP_TOOL" commit --base "$tmp/in/base.qsnap" \
    --overlay "$tmp/in/changes.ovl" --output "$tmp/out/commit.qsnap" \
    --level 19 --jobs 1 >/dev/null 2>"$tmp/err" &
  pid=$!
  sleep "$((RANDOM % 2)).$((RANDOM % 10))"
  kill -KILL $pid 2>/dev/null || :
  status=0; wait $pid || status=$?
  if [ -e "$tmp/out/commit.qsnap" ]; then
    [ $status = 0 ] || fail "commit killed (status $status) left a file under the final name"
    qsnap verify "$tmp/out/commit.qsnap" >/dev/null || fail "a finished commit does not verify"
  fi
done
rm -f "$tmp/out/commit.qsnap"
[ "$(ls -A "$tmp/out")" = old.qsnap ] ||
  { ls -la "$tmp/out" >&2; fail "killed commits left a temporary file"; }

# Uninterrupted, the same command replaces the file.
qsnap create --level 1 "$tmp/in/random.raw" "$tmp/out/old.qsnap" >/dev/null
[ "$(sha256sum < "$tmp/out/old.qsnap")" != "$old" ] || fail "the file was not replaced"
[ "$(ls -A "$tmp/out")" = old.qsnap ] || fail "a temporary file was left after success"
echo "PASS: qsnap files appear complete or not at all"
