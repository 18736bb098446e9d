#!/usr/bin/env bash
# SPDX-License-Identifier: BSD-3-Clause
# Every source file says its licence in an SPDX line near its top (the
# project is BSD-3-Clause, LICENSE), so a new file cannot come without.
source ./tests/functions.sh

[ -s "$top_srcdir/LICENSE" ] || fail "no LICENSE in $top_srcdir"
grep -q "Redistribution and use in source and binary forms" "$top_srcdir/LICENSE" ||
  fail "LICENSE is not the BSD licence"
cd "$top_srcdir"
missing=$(
  { ls lib/*.[ch] server/*.[ch] plugins/qemount/*.c guests/linux/*.c \
       tests/*.c tests/fuzz/*.c tests/*.sh tests/*.py tests/functions.sh.in \
       scripts/* guests/linux/init guests/linux/build-guest .ci/run \
       plugins/qemount/*.pod server/*.pod Makefile.am configure.ac \
       server/Makefile.inc lib/*.mk guests/linux/*.mk 2>/dev/null; } |
    while read -r f; do
      [ -f "$f" ] || continue
      head -n 3 "$f" | grep -q "SPDX-License-Identifier: BSD-3-Clause" || echo "$f"
    done)
[ -z "$missing" ] || fail "no SPDX-License-Identifier line in: $(echo $missing)"
echo "PASS: every source file carries the licence's SPDX line"
