#!/usr/bin/env bash
# SPDX-License-Identifier: BSD-3-Clause
# Replays the fuzzing corpus kept in the tree (tests/fuzz/corpus/FORMAT:
# inputs the fuzzer found that reach new code, and crashers once fixed,
# in tests/fuzz/regressions/) through the image layer: each is decoded or
# refused, never a crash or a sanitizer report.  The target "server"'s
# through the qemount command's disk parsers, as its harness runs them.
source ./tests/functions.sh

# replay INPUT: through tests/fuzz-server-replay, without a crash or a
# sanitizer report.
replay ()
{
  local status=0
  env $QEMOUNT_READ_ENV "$top_builddir/tests/fuzz-server-replay" "$1" \
    >/dev/null 2>"$tmp/err" || status=$?
  [ $status -lt 128 ] || fail "$1: killed by signal $((status - 128))"
  ! grep -Eq 'Sanitizer|runtime error:' "$tmp/err" || { cat "$tmp/err" >&2; fail "$1: sanitizer report"; }
  [ $status -eq 0 ] || { cat "$tmp/err" >&2; fail "$1: exit status $status"; }
}

n=0
for input in "$top_srcdir"/tests/fuzz/corpus/*/* "$top_srcdir"/tests/fuzz/regressions/*; do
  [ -f "$input" ] || continue
  case "$input" in
    */corpus/server/*|*/regressions/server-*)
      replay "$input"; n=$((n + 1)); continue ;;
    */corpus/auto/*|*/regressions/auto-*) format=() ;;
    */corpus/*) format=(-f "$(basename "$(dirname "$input")")") ;;
    */regressions/*) format=(-f "$(basename "$input" | cut -d- -f1)") ;;
  esac
  status=0
  qemount_read -b no "${format[@]}" -m "$input" >/dev/null 2>"$tmp/err" || status=$?
  [ $status -lt 128 ] || fail "$input: killed by signal $((status - 128))"
  if grep -Eq 'Sanitizer|runtime error:' "$tmp/err"; then
    cat "$tmp/err" >&2; fail "$input: sanitizer report"
  fi
  status=0
  qemount_read -b no "${format[@]}" "$input" >/dev/null 2>"$tmp/err" || status=$?
  [ $status -lt 128 ] || fail "$input: killed by signal $((status - 128))"
  ! grep -Eq 'Sanitizer|runtime error:' "$tmp/err" || { cat "$tmp/err" >&2; fail "$input: sanitizer report"; }
  n=$((n + 1))
done
[ "$n" -gt 50 ] || fail "only $n corpus inputs"
echo "PASS: $n fuzzing corpus inputs decoded or refused cleanly"
