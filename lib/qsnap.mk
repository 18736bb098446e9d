# qsnap writer, "qemount snapshot" and their tests.  Included from
# Makefile.am after lib_libqemount_la_*, TESTS and EXTRA_DIST are set;
# paths are relative to the top directory.

lib_libqemount_la_SOURCES += lib/qsnap-writer.h lib/qsnap-writer.c

# "qemount snapshot" on its own, for the tests (server/qemount links the
# same server/snapshot.c into the real command).
check_PROGRAMS += tests/qsnap-tool
tests_qsnap_tool_SOURCES = tests/qsnap-tool.c server/snapshot.h \
	server/snapshot.c server/output.c
tests_qsnap_tool_CFLAGS = $(AM_CFLAGS) -I$(top_srcdir)/lib \
	-I$(top_srcdir)/server
tests_qsnap_tool_LDADD = lib/libqemount.la

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
