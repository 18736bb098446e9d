/* SPDX-License-Identifier: BSD-3-Clause */
/* Preloaded after the ASan runtime into nbdkit (which is not built with
 * the sanitizers) in sanitized test runs only.  With the runtime
 * preloaded, a process that printed an errno message deadlocks at exit
 * in glibc's locale lock when libp11-kit's destructor calls freelocale
 * (seen with nbdkit's own file plugin too).  Freeing a locale at exit
 * is pointless, so this makes it a no-op.
 */

#include <locale.h>

void
freelocale (locale_t locale)
{
  (void) locale;
}
