#!/usr/bin/env bash
# SPDX-License-Identifier: BSD-3-Clause
# Malformed images, each breaking one rule: a clear error naming the file
# and the rule, a non-zero exit and no crash, both from the image layer
# alone and through nbdkit with a real client.
source ./tests/functions.sh
requires nbdkit
requires nbdcopy
requires qemu-img

corpus="$tmp/corpus"
mkdir "$corpus"
$PYTHON "$top_srcdir/tests/malformed.py" "$corpus"

# check_failure WHAT STATUS LOG MESSAGE
check_failure ()
{
  local what="$1" status="$2" log="$3" message="$4"
  [ "$status" -ne 0 ] || fail "$what: accepted"
  [ "$status" -lt 128 ] || { cat "$log" >&2; fail "$what: killed by a signal ($status)"; }
  if grep -Eq 'Sanitizer|runtime error:' "$log"; then
    cat "$log" >&2; fail "$what: sanitizer report"
  fi
  grep -F -- "$corpus/" "$log" | grep -qF -- "$message" ||
    { cat "$log" >&2; fail "$what: no error naming the file and '$message'"; }
}

export tmp
n=0
while IFS=$'\t' read -r name when message; do
  status=0
  qemount_read "$corpus/$name" >/dev/null 2>"$tmp/log" || status=$?
  check_failure "qemount-read $name" "$status" "$tmp/log" "$message"

  status=0
  rm -f "$tmp/served"
  qemount_nbdkit -r --run 'touch "$tmp/served"; nbdcopy "$uri" null:' -- file="$corpus/$name" \
    </dev/null >"$tmp/log" 2>&1 || status=$?
  check_failure "nbdkit $name" "$status" "$tmp/log" "$message"
  case "$when" in
    open) [ ! -e "$tmp/served" ] || fail "nbdkit $name: served, not refused at start-up" ;;
    read) [ -e "$tmp/served" ] || fail "nbdkit $name: refused at start-up, expected a read error" ;;
  esac
  n=$((n + 1))
done < "$corpus/CASES"
[ "$n" -gt 20 ] || fail "only $n malformed cases"
echo "PASS: $n malformed images refused cleanly"
