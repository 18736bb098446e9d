/* SPDX-License-Identifier: BSD-3-Clause */
/* qsnap-tool: "qemount snapshot" alone, linked straight to the image
 * layer, so that the qsnap tests need nothing else of the qemount
 * command.  qsnap-tool ARGS... is qemount snapshot ARGS...
 */

#include <config.h>

#include "snapshot.h"

int
main (int argc, char *argv[])
{
  argv[0] = (char *) "snapshot";
  return snapshot_main (argc, argv);
}
