/* SPDX-License-Identifier: BSD-3-Clause */
/* VMDK: the text descriptor, between lib/vmdk.c and its parser. */

#ifndef QEMOUNT_VMDK_H
#define QEMOUNT_VMDK_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* A descriptor is read whole, and no larger than this. */
#define VMDK_MAX_DESCRIPTOR (1u << 20)
/* Each extent is an open file for as long as the image is. */
#define VMDK_MAX_EXTENTS 4096

enum vmdk_extent_type {
  VMDK_EXTENT_SPARSE,           /* a hosted sparse extent (KDMV) */
  VMDK_EXTENT_FLAT,             /* FLAT and VMFS: the bytes as they are */
  VMDK_EXTENT_ZERO,
};

struct vmdk_descriptor_extent {
  bool noaccess;                /* NOACCESS: reads as zeros, no file */
  enum vmdk_extent_type type;
  uint64_t sectors;
  char *file;                   /* NULL for ZERO and NOACCESS */
  uint64_t offset;              /* FLAT: in sectors, into file */
};

struct vmdk_descriptor {
  bool has_cid, has_parent_cid;
  uint32_t cid, parent_cid;     /* parent_cid 0xffffffff: none */
  const char *create_type;      /* static, NULL if absent or unknown */
  char *parent_hint;            /* parentFileNameHint, NULL if none */
  struct vmdk_descriptor_extent *extents;
  size_t n_extents;
};

#define VMDK_NO_PARENT_CID 0xffffffffu

/* Parse len bytes of descriptor text (it ends at the first NUL) read
 * from path.  with_extents: the extent lines are checked and kept (a
 * descriptor file); an embedded descriptor's are ignored, its sparse
 * file is the extent.  0, or -1 after image_error with errno EINVAL.
 */
int vmdk_parse_descriptor (const char *path, const char *text, size_t len,
                           bool with_extents, struct vmdk_descriptor *d);
void vmdk_descriptor_free (struct vmdk_descriptor *d);

#endif /* QEMOUNT_VMDK_H */
