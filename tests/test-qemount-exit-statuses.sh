#!/usr/bin/env bash
# SPDX-License-Identifier: BSD-3-Clause
# Every exit status qemount uses (the enum in server/qemount.h) is
# documented in qemount(1)'s EXIT STATUS section, and the section lists
# no other: a status added to one must be added to the other.
source ./tests/functions.sh

$PYTHON - "$top_srcdir/server/qemount.h" "$top_srcdir/server/qemount.pod" <<'PY' ||
import re, sys
header, pod = (open(p).read() for p in sys.argv[1:3])
enum = re.search(r"/\* Exit statuses:.*?\nenum \{(.*?)\};", header, re.S)
if not enum:
    sys.exit("FAIL: no exit status enum in server/qemount.h")
used = {int(v) for v in re.findall(r"EXIT_\w+ = (\d+)", enum.group(1))}
section = re.search(r"^=head1 EXIT STATUS\n(.*?)^=head1 ", pod, re.S | re.M)
if not section:
    sys.exit("FAIL: no EXIT STATUS section in qemount.pod")
documented = {int(v) for v in re.findall(r"^=item B<(\d+)>", section.group(1), re.M)}
if len(used) < 10:
    sys.exit("FAIL: only %d statuses found in the enum" % len(used))
if used != documented:
    sys.exit("FAIL: in the enum, not in qemount(1): %s; in qemount(1), not in "
             "the enum: %s" % (sorted(used - documented), sorted(documented - used)))
print("%d exit statuses, each in the enum and in qemount(1)" % len(used))
PY
  fail "qemount(1) and server/qemount.h disagree on exit statuses"
echo "PASS: exit statuses documented"
