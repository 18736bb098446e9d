# SPDX-License-Identifier: BSD-3-Clause
# qsnap writer, "qemount snapshot" and their tests.  Included from
# Makefile.am after lib_libqemount_la_*, TESTS and EXTRA_DIST are set;
# paths are relative to the top directory.

# The writer is for the qemount command only: the plugin never writes
# snapshots, so it links lib/libqemount.la without it.
noinst_LTLIBRARIES += lib/libqsnapwriter.la
lib_libqsnapwriter_la_SOURCES = lib/qsnap-writer.h lib/qsnap-writer.c \
	lib/s3-upload.h lib/s3-upload.c
lib_libqsnapwriter_la_CFLAGS = $(lib_libqemount_la_CFLAGS)
lib_libqsnapwriter_la_LIBADD = lib/libqemount.la

# "qemount snapshot" on its own, for the tests (server/qemount links the
# same server/snapshot.c into the real command).
check_PROGRAMS += tests/qsnap-tool
tests_qsnap_tool_SOURCES = tests/qsnap-tool.c server/snapshot.h \
	server/snapshot.c server/output.c
tests_qsnap_tool_CFLAGS = $(AM_CFLAGS) -I$(top_srcdir)/lib \
	-I$(top_srcdir)/server
tests_qsnap_tool_LDADD = lib/libqsnapwriter.la

man_MANS += server/qemount-snapshot.1
server/qemount-snapshot.1: server/snapshot.pod
	$(AM_V_GEN)$(MKDIR_P) server && \
	$(POD2MAN) --section=1 --center="qemount" \
	  --release="$(PACKAGE_NAME)-$(PACKAGE_VERSION)" \
	  --name=qemount-snapshot $< > $@.tmp && mv $@.tmp $@

TESTS += \
	tests/test-qsnap-create.sh \
	tests/test-qsnap-roundtrip.sh \
	tests/test-qsnap-streams.sh \
	tests/test-qsnap-corrupt.sh \
	tests/test-qsnap-atomic.sh \
	tests/test-qsnap-commit.sh \
	tests/test-qsnap-agree.sh
EXTRA_DIST += server/snapshot.pod tests/qsnap-image.py tests/qsnap-patch.py
