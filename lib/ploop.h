/* SPDX-License-Identifier: BSD-3-Clause */
/* ploop DiskDescriptor.xml chains, opened through the ploop format. */

#ifndef QEMOUNT_PLOOP_H
#define QEMOUNT_PLOOP_H

#include "image.h"
#include "source.h"

/* Whether a file starting with buf may be a DiskDescriptor.xml (from
 * those bytes alone), and whether it is one (reading more of src).  With
 * the format forced, the first chooses between a descriptor and a delta,
 * and ploop_descriptor_open says why a file is not a descriptor.
 */
bool ploop_descriptor_starts_like (const uint8_t *buf, size_t len);
bool ploop_descriptor_probe (struct source *src, const uint8_t *buf,
                             size_t len);
struct image *ploop_descriptor_open (const char *path, struct source *src,
                                     const struct image_options *opts,
                                     unsigned depth);

const char *ploop_descriptor_xml_version (void);

#endif /* QEMOUNT_PLOOP_H */
