#!/usr/bin/env bash
# SPDX-License-Identifier: BSD-3-Clause
# qemount extract of an image named by URL (nginx on 127.0.0.1), through
# the helper VM: the tar holds the files that went in.
source ./tests/qemount-functions.sh
source "$top_srcdir/tests/remote-functions.sh"
requires_guest
requires curl
make_images mbr-only
convert_images mbr
mkdir "$tmp/www" "$tmp/x"
ln -s "$tmp/mbr.qcow2" "$tmp/www/mbr.qcow2"
nginx_start "$tmp/www"

qemount extract "$http/mbr.qcow2" --path /dir/sub -o "$tmp/sub.tar" ||
  fail "extract $http/mbr.qcow2 failed"
tar -xf "$tmp/sub.tar" -C "$tmp/x"
mkdir -p "$tmp/want/dir"
cp -a "$tmp/tree/dir/sub" "$tmp/want/dir/"
manifest "$tmp/want" > "$tmp/want.manifest"
manifest "$tmp/x" > "$tmp/got.manifest"
diff -u "$tmp/want.manifest" "$tmp/got.manifest" ||
  fail "extract --path /dir/sub over HTTP: the files differ"

echo "PASS: qemount extract of an image by URL"
