/* ploop DiskDescriptor.xml chains, opened through the ploop format. */

#ifndef QEMOUNT_PLOOP_H
#define QEMOUNT_PLOOP_H

#include "image.h"

bool ploop_descriptor_probe (const uint8_t *buf, size_t len);
struct image *ploop_descriptor_open (const char *path, int fd,
                                     const struct image_options *opts,
                                     unsigned depth);

const char *ploop_descriptor_xml_version (void);

#endif /* QEMOUNT_PLOOP_H */
