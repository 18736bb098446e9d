#!/usr/bin/env bash
# SPDX-License-Identifier: BSD-3-Clause
# Random unaligned reads on four concurrent connections (the plugin is
# multi-threaded and shares one image), compared with the raw source.
source ./tests/functions.sh
requires nbdkit
$PYTHON -c 'import nbd' 2>/dev/null || skip "python3-libnbd is not installed"

export expected
while read -r image format expected; do
  expected="$IMAGES/$expected"
  qemount_nbdkit -r --run "$PYTHON $top_srcdir/tests/nbd-check.py reads \"\$uri\" \"\$expected\" --count 100 --conns 4" -- \
    file="$IMAGES/$image" </dev/null ||
    fail "$image ($format): random reads differ"
done < <(images_manifest)
