#!/usr/bin/env bash
# SPDX-License-Identifier: BSD-3-Clause
# The persistent cache of remote blocks (cache-dir=) over HTTP (nginx
# on 127.0.0.1): a second read fetches nothing and reads the same
# bytes; a replaced object, a corrupt or torn block and two processes
# filling one cache at once still read exactly the object; no
# credentials in the cache.  And cache=0 fetches no blocks ahead that it
# would throw away.
source ./tests/functions.sh
source "$top_srcdir/tests/remote-functions.sh"
requires nbdkit
requires nbdcopy
requires curl

mkdir -p "$tmp/www"
nginx_start "$tmp/www"
cache=$tmp/cache

# get_bytes: bytes nginx sent answering GETs of /data.raw so far (a
# HEAD at open is not a fetch).
get_bytes ()
{
  awk '$1 == "GET" && $2 == "/data.raw" { n += $4 } END { print n + 0 }' \
    "$tmp/nginx/access.log"
}

# read_through WHAT OUT [PLUGIN-ARGS...]: nbdcopy the object through
# nbdkit qemount with cache-dir=$cache into OUT.
read_through ()
{
  local what=$1 out=$2
  shift 2
  rm -f "$out"
  out=$out qemount_nbdkit -r --run 'nbdcopy "$uri" "$out"' -- \
    file="$http/data.raw" format=raw cache-dir="$cache" "$@" \
    2>"$tmp/err-$what" </dev/null ||
    { cat "$tmp/err-$what" >&2; fail "$what: nbdkit qemount failed"; }
}

# reads_right WHAT [PLUGIN-ARGS...]: read_through reads what the
# server's file holds now.
reads_right ()
{
  read_through "$1" "$tmp/out" "${@:2}"
  cmp -s "$tmp/out" "$tmp/www/data.raw" || fail "$1: the data differs"
}

# 3 MiB and a bit: a short last block.
head -c $(((3 << 20) + 12345)) /dev/urandom > "$tmp/www/data.raw"

# The first read fetches and fills the cache, the second fetches nothing.
reads_right "first read"
before=$(get_bytes)
[ "$before" -gt 0 ] || fail "first read: nothing fetched"
reads_right "second read"
after=$(get_bytes)
echo "first read: $before bytes fetched, second: $((after - before))"
[ "$after" = "$before" ] || fail "second read: $((after - before)) bytes fetched"

# A user, password or query in the URL: the same object (read from the
# cache), and none of them in the cache's names or files.
hostport=${http#http://}
rm -f "$tmp/out"
out=$tmp/out qemount_nbdkit -r --run 'nbdcopy "$uri" "$out"' -- \
  file="http://user:s3cret@$hostport/data.raw?X-Amz-Signature=t0ken" \
  format=raw cache-dir="$cache" 2>"$tmp/err" </dev/null ||
  { cat "$tmp/err" >&2; fail "credentials: nbdkit qemount failed"; }
cmp -s "$tmp/out" "$tmp/www/data.raw" || fail "credentials: the data differs"
[ "$(get_bytes)" = "$after" ] || fail "credentials: fetched again"
! find "$cache" | grep -qE 's3cret|t0ken' || fail "credentials in a file name"
! grep -rqaE 's3cret|t0ken' "$cache" || fail "credentials in a cache file"

# A corrupt block (bytes flipped) and a torn one (cut short) are fetched
# again, not served; then kept whole again.
blocks=("$cache"/*/0000000000000001)
[ "${#blocks[@]}" = 1 ] && [ -f "${blocks[0]}" ] || fail "no file for block 1 in $cache"
dir=$(dirname "${blocks[0]}")
printf '\xde\xad\xbe\xef' |
  dd of="$dir/0000000000000001" bs=1 seek=100000 conv=notrunc status=none
truncate -s 1000 "$dir/0000000000000002"
before=$(get_bytes)
reads_right "corrupt blocks"
after=$(get_bytes)
[ $((after - before)) -ge $((2 * 262144)) ] ||
  fail "corrupt blocks: $((after - before)) bytes fetched, not the two blocks"
reads_right "corrupt blocks kept again"
[ "$(get_bytes)" = "$after" ] || fail "corrupt blocks: not kept again"

# What a writer killed mid-block left (a temporary file) goes at the
# next open once it is old; one that may still be being written stays.
touch -d '1 hour ago' "$dir/.tmp-killed"
touch "$dir/.tmp-writing"
reads_right "stale temporary files"
[ ! -e "$dir/.tmp-killed" ] || fail "a killed writer's temporary file is still there"
[ -e "$dir/.tmp-writing" ] || fail "a recent temporary file was removed"
rm -f "$dir/.tmp-writing"

# The object replaced between two runs: the new content, not old blocks.
head -c $(((3 << 20) + 12345)) /dev/urandom > "$tmp/www/data.new"
touch -d '2001-01-01' "$tmp/www/data.new"
mv "$tmp/www/data.new" "$tmp/www/data.raw"
reads_right "replaced object"

# Two processes filling a new cache at once both read the object.
cache=$tmp/cache2
read_through "first process" "$tmp/out1" connections=2 &
first=$!
read_through "second process" "$tmp/out2" connections=2 &
second=$!
wait "$first" || fail "first process failed"
wait "$second" || fail "second process failed"
cmp -s "$tmp/out1" "$tmp/www/data.raw" || fail "first process: the data differs"
cmp -s "$tmp/out2" "$tmp/www/data.raw" || fail "second process: the data differs"
reads_right "after two processes"

# cache=0 without cache-dir=: a sequential reader fetches each block
# once, not blocks ahead that nothing keeps.
head -c 8M /dev/urandom > "$tmp/www/seq.raw"
qemount_read -c 0 -f raw "$http/seq.raw" 2>"$tmp/err" |
  cmp -s - "$tmp/www/seq.raw" ||
  { cat "$tmp/err" >&2; fail "cache=0: data differs"; }
bytes=$(awk '$1 == "GET" && $2 == "/seq.raw" { n += $4 } END { print n + 0 }' \
          "$tmp/nginx/access.log")
echo "8 MiB read sequentially with cache=0: $bytes bytes fetched"
[ "$bytes" -lt $((9 << 20)) ] || fail "cache=0: $bytes bytes fetched for 8 MiB"

echo "PASS: cache-dir= over HTTP, cache=0 without readahead"
