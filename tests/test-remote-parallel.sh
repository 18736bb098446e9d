#!/usr/bin/env bash
# SPDX-License-Identifier: BSD-3-Clause
# Parallel readers of a remote object fetch each block once: nbdcopy's
# concurrent requests (several connections, readahead of one racing the
# demand reads of the others) move the object's size from the server,
# not a multiple of it.
source ./tests/functions.sh
source "$top_srcdir/tests/remote-functions.sh"
requires nbdkit
requires nbdcopy
requires curl

mkdir -p "$tmp/www"
nginx_start "$tmp/www"

# size plus a margin for the headers of a few hundred requests
check_once ()
{
  local what=$1 file=$2 size bytes
  size=$(stat -c %s "$tmp/www/$file")
  bytes=$(nginx_bytes "/$file")
  echo "$what: $bytes bytes fetched for $size"
  [ "$bytes" -le $((size + (64 << 10))) ] ||
    fail "$what: $bytes bytes fetched for an object of $size"
}

head -c 3M /dev/urandom > "$tmp/www/small.raw"
head -c 24M /dev/urandom > "$tmp/www/large.raw"
for file in small.raw large.raw; do
  out="$tmp/out" qemount_nbdkit -r --run 'nbdcopy "$uri" "$out"' -- \
    file="$http/$file" 2>"$tmp/err" </dev/null ||
    { cat "$tmp/err" >&2; fail "$file: nbdcopy failed"; }
  cmp -s "$tmp/out" "$tmp/www/$file" || fail "$file: data differs"
  check_once "nbdcopy of $file" "$file"
done

echo "PASS: parallel reads fetch each block once"
