/* SPDX-License-Identifier: BSD-3-Clause */
/* Apple UDIF (.dmg): what lib/dmg.c and its plist parser share. */

#ifndef QEMOUNT_DMG_H
#define QEMOUNT_DMG_H

#include <stddef.h>
#include <stdint.h>

#include "image.h"

/* Chunk types of a mish table. */
#define DMG_ZERO     0x00000000u
#define DMG_RAW      0x00000001u
#define DMG_IGNORE   0x00000002u        /* reads as zeros */
#define DMG_ADC      0x80000004u
#define DMG_ZLIB     0x80000005u
#define DMG_BZIP2    0x80000006u
#define DMG_LZFSE    0x80000007u
#define DMG_LZMA     0x80000008u
#define DMG_COMMENT  0x7ffffffeu
#define DMG_END      0xffffffffu

/* One run of the disk's sectors, stored one way. */
struct chunk {
  uint64_t sector;              /* first sector on the disk */
  uint64_t sectors;             /* > 0 */
  uint64_t offset;              /* stored bytes: in the data fork (from
                                   the plist), then in the file */
  uint64_t length;              /* stored bytes */
  uint32_t type;
  uint32_t partition;           /* blkx entry and chunk number, */
  uint32_t entry;               /* for messages */
};

/* The chunks of every blkx partition of the XML property list at offset
 * (length bytes, bounded by the caller) with sectors > 0, unsorted,
 * malloc'd into *chunks.  Each partition's table is checked (magic, its
 * size, chunk sectors inside the partition, sector numbers that
 * overflow); the chunks' own fields are left to the caller.
 */
int dmg_read_plist (struct image *img, uint64_t offset, uint64_t length,
                    struct chunk **chunks, size_t *n_chunks);

const char *dmg_chunk_type_name (uint32_t type);

#endif /* QEMOUNT_DMG_H */
