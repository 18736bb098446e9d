/* SPDX-License-Identifier: BSD-3-Clause */
/* VHDX internals shared by the decoder (vhdx.c) and its log replay
 * (vhdx-log.c).
 */

#ifndef QEMOUNT_VHDX_H
#define QEMOUNT_VHDX_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "image.h"

#define VHDX_MiB                (UINT64_C (1) << 20)
#define VHDX_GUID_SIZE          16

/* The file identifier and the two headers: nothing may be written
 * there through the log (the headers locate it).
 */
#define VHDX_HEADERS_END        (192 * 1024)

/* CRC-32C (Castagnoli) of len bytes continuing from crc, 0 to start:
 * vhdx_crc32c (vhdx_crc32c (0, a), b) is the CRC of a then b.
 */
uint32_t vhdx_crc32c (uint32_t crc, const void *buf, size_t len);

/* The checksum of a structure of len bytes whose own checksum field is
 * the 4 bytes at offset 4, counted as zeros (headers, region tables and
 * log entries all have it there).
 */
uint32_t vhdx_checksum (const uint8_t *buf, size_t len);

/* "%08x-%04x-..." form of a GUID in its binary (mixed-endian) form. */
#define VHDX_GUID_STRLEN        37
void vhdx_format_guid (const uint8_t *guid, char out[VHDX_GUID_STRLEN]);

/* The writes of a replayed log, kept in memory: the file as the log
 * leaves it is the file with these laid over it.
 */
struct vhdx_log;

/* Find the active sequence of the log at [log_offset, + log_length) of
 * the file (physically file_size bytes) whose entries carry guid, and
 * keep its writes.  *log is NULL when no entry is there to replay.
 * Errors are reported, with errno set.
 */
int vhdx_log_replay (struct image *img, uint64_t file_size,
                     uint64_t log_offset, uint32_t log_length,
                     const uint8_t *guid, struct vhdx_log **log);

/* Size of the file once the log is replayed (it may extend it). */
uint64_t vhdx_log_file_size (const struct vhdx_log *log);

/* Whether the log writes any byte of [offset, offset + length). */
bool vhdx_log_writes (const struct vhdx_log *log, uint64_t offset,
                      uint64_t length);

/* Read count bytes of the file at offset as the log leaves it (log may
 * be NULL: the file as it is).  Bytes between the end of the file and
 * the size the log gives it read as zeros.
 */
int vhdx_read (struct image *img, const struct vhdx_log *log, void *buf,
               size_t count, uint64_t offset, const char *what);

void vhdx_log_free (struct vhdx_log *log);

/* The version of ISA-L (CRC-32C) built against, for --dump-plugin. */
const char *vhdx_isal_version (void);

#endif /* QEMOUNT_VHDX_H */
