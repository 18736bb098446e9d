/* SPDX-License-Identifier: BSD-3-Clause */
/* qemount snapshot: create, commit, info and verify qsnap files. */

#ifndef QEMOUNT_SNAPSHOT_H
#define QEMOUNT_SNAPSHOT_H

/* argv[0] is "snapshot", argv[1] the subcommand.  Returns the exit
 * status: 0 done, 1 error, 2 usage.
 */
int snapshot_main (int argc, char *argv[]);

#endif /* QEMOUNT_SNAPSHOT_H */
