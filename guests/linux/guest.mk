# SPDX-License-Identifier: BSD-3-Clause
# The helper VM (guests/linux/build-guest): make guest builds it in
# build/guest, again when the script, the init or the kernel package
# apt would choose change.  Included at the end of Makefile.am.

GUEST_DIR = build/guest
GUEST_INPUTS = $(srcdir)/guests/linux/build-guest $(srcdir)/guests/linux/init \
	guests/linux/qemount-sftp-relay guests/linux/qemount-resume

# Runs in the guest in front of sftp-server (it answers reads with
# splice); installed next to build-guest, which copies it in.
pkglibexec_PROGRAMS = guests/linux/qemount-sftp-relay
guests_linux_qemount_sftp_relay_SOURCES = guests/linux/sftp-relay.c
# Never sanitized: it runs in the guest, which has no sanitizer runtime
# to spare memory for.
guests_linux_qemount_sftp_relay_CFLAGS = $(WARN_CFLAGS)
guests_linux_qemount_sftp_relay_LDFLAGS =
# Sets the clock and reseeds the random state of a restored guest.
pkglibexec_PROGRAMS += guests/linux/qemount-resume
guests_linux_qemount_resume_SOURCES = guests/linux/resume.c
guests_linux_qemount_resume_CFLAGS = $(WARN_CFLAGS)
guests_linux_qemount_resume_LDFLAGS =
TESTS += tests/test-sftp-relay.sh tests/test-build-guest-apfs.sh
EXTRA_DIST += tests/test-sftp-relay.sh tests/sftp-relay-check.py

guest: $(GUEST_DIR)/info
	@cat $(GUEST_DIR)/info

# The package is part of the input: a new kernel in apt rebuilds.
$(GUEST_DIR)/package: FORCE
	@$(MKDIR_P) $(GUEST_DIR)
	@pkg=$$(apt-cache depends linux-image-$$(dpkg --print-architecture) 2>/dev/null | \
	  sed -n 's/^ *Depends: \(linux-image-[0-9][^ ]*\)$$/\1/p' | head -n 1); \
	if [ -n "$$pkg" ] && [ "$$(cat $@ 2>/dev/null)" != "$$pkg" ]; then \
	  echo "$$pkg" > $@; fi

$(GUEST_DIR)/info: $(GUEST_INPUTS) $(GUEST_DIR)/package
	$(AM_V_GEN)QEMOUNT_SFTP_RELAY=guests/linux/qemount-sftp-relay \
	  QEMOUNT_RESUME=guests/linux/qemount-resume $(srcdir)/guests/linux/build-guest $(GUEST_DIR)

FORCE:
.PHONY: guest FORCE
EXTRA_DIST += guests/linux/guest.mk

# Installed, for qemount guest build (which looks in PKGLIBEXECDIR).
guestdir = $(pkglibexecdir)
dist_guest_SCRIPTS = guests/linux/build-guest guests/linux/init
