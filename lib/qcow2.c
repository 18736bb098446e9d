/* SPDX-License-Identifier: BSD-3-Clause */
/* qcow2 (QEMU copy-on-write v2 and v3), read-only.
 *
 * Guest clusters are mapped through a two-level table: the L1 table,
 * loaded at open, points at L2 tables of one cluster each, whose entries
 * point at data clusters (plain, zero, compressed or unallocated).  L2
 * tables are read lazily through a small cache of fixed-size slices so
 * that memory stays bounded whatever the image size.
 *
 * Every field of the file is treated as hostile.  What can be checked
 * cheaply at open (header, L1 table) is checked there; L2 entries are
 * checked when they are used, and a bad one fails that read with EIO.
 *
 * Not supported (refused at open): encryption, external data files,
 * unknown incompatible features.  Bitmaps and refcounts are ignored.
 * The snapshot table is read and checked whole at open (qemount info
 * lists it); an internal snapshot is served by reading its L1 table
 * instead of the active one, which is all that differs.
 */

#include <config.h>

#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bytes.h"
#include "cache.h"
#include "decompress.h"
#include "image.h"
#include "source.h"
#include "thread-local.h"

#define QCOW2_MAGIC             0x514649fbu     /* "QFI\xfb" */
#define V2_HEADER_LENGTH        72
#define V3_HEADER_LENGTH        104
#define MIN_CLUSTER_BITS        9
#define MAX_CLUSTER_BITS        21              /* QEMU's limit too */
#define MIN_EXTL2_CLUSTER_BITS  14
#define MAX_L1_BYTES            (UINT32_C (32) << 20)
#define MAX_BACKING_NAME        1023
#define SNAPSHOT_ENTRY_HEADER   40
/* QEMU's limits too: it never writes more. */
#define MAX_SNAPSHOTS           65536
#define MAX_SNAPSHOT_EXTRA      1024
#define MAX_SNAPSHOT_TABLE      (UINT64_C (64) << 20)
#define SECTOR                  512

/* Header extension types. */
#define EXT_END                 0x00000000u
#define EXT_BACKING_FORMAT      0xe2792acau
#define EXT_FEATURE_TABLE       0x6803f857u
#define EXT_CRYPTO_HEADER       0x0537be77u
#define EXT_DATA_FILE           0x44415441u

/* Incompatible feature bits. */
#define INCOMPAT_DIRTY          (UINT64_C (1) << 0)
#define INCOMPAT_CORRUPT        (UINT64_C (1) << 1)
#define INCOMPAT_DATA_FILE      (UINT64_C (1) << 2)
#define INCOMPAT_COMPRESSION    (UINT64_C (1) << 3)
#define INCOMPAT_EXTL2          (UINT64_C (1) << 4)
#define INCOMPAT_KNOWN          (UINT64_C (0x1f))

#define FEATURE_ENTRY_SIZE      48
#define FEATURE_NAME_SIZE       46

#define COMPRESSION_DEFLATE     0
#define COMPRESSION_ZSTD        1

/* L1 and L2 entries: bits 9-55 are a host offset. */
#define OFFSET_MASK             UINT64_C (0x00fffffffffffe00)
#define L2E_COMPRESSED          (UINT64_C (1) << 62)
#define L2E_ZERO                UINT64_C (1)

/* L2 cache geometry.  A slice is 4 KiB of entries (less when a whole L2
 * table is smaller); 256 slices is 1 MiB per image, which maps 8 GiB of
 * guest with 64 KiB clusters.
 */
#define SLICE_MAX_BYTES         4096
#define CACHE_MAX_SLOTS         256

/* Cache of L2 slices, keyed on their file offset (never 0: L2 tables
 * are never in the header cluster).  A chained hash table over a fixed
 * array of slots with clock eviction.  Slices are stored in host byte
 * order.
 */
struct l2_cache {
  pthread_mutex_t lock;
  uint32_t nslots;
  unsigned bucket_bits;
  uint32_t hand;                /* clock hand */
  uint64_t *keys;               /* [nslots], 0 = free slot */
  int32_t *next;                /* [nslots], hash chain, -1 ends */
  int32_t *buckets;             /* [1 << bucket_bits] */
  uint8_t *referenced;          /* [nslots], clock bits */
  uint64_t *data;               /* [nslots * slice_words] */
};

struct qcow2 {
  struct block_cache *clusters; /* decompressed: image_block_cache () */
  uint64_t owner;               /* key space in it */
  uint32_t version;
  unsigned cluster_bits;
  uint64_t cluster_size;
  bool extended_l2;
  unsigned entry_words;         /* 64-bit words per L2 entry: 1 or 2 */
  unsigned l2_bits;             /* log2 of entries per L2 table */
  unsigned subcluster_bits;     /* log2 of subcluster size (extended L2) */
  unsigned slice_bits;          /* log2 of slice size in bytes */
  uint32_t slice_entries;       /* L2 entries per slice */
  unsigned compression;
  unsigned compressed_shift;    /* x in the spec */
  uint64_t compressed_offset_mask;
  uint64_t compressed_sectors_mask;
  uint64_t file_size;           /* at open; the file is not written */
  uint64_t *l1;                 /* L2 table offsets, 0 = unallocated */
  uint32_t l1_size;
  struct image_snapshot *snapshots;     /* the snapshot table, in order */
  struct snapshot_l1 {                  /* and where their L1 tables are */
    uint64_t offset;
    uint32_t size;
  } *snapshot_l1;
  uint32_t n_snapshots;
  long served;                  /* index of the snapshot served, -1: none */
  uint8_t *header;              /* first cluster, only during open */
  bool cache_lock_ok;
  struct l2_cache cache;
};

/* A window onto the L2 mapping: one slice copied out of the cache, or a
 * whole unallocated L2 range.  Lives on the reader's stack, so mapping
 * lookups need the cache lock only to copy a slice.
 */
struct window {
  uint64_t first;               /* first guest cluster covered */
  uint64_t n;                   /* clusters covered, 0 = empty window */
  bool unallocated;
  uint64_t words[SLICE_MAX_BYTES / 8];
};
_Static_assert (sizeof (struct window) <= sizeof (struct image_map_state),
                "the L2 window must fit in the map state");

/* For format errors at open: report, set errno, evaluate to -1. */
#define OPEN_ERROR(err, ...) \
  (image_error (__VA_ARGS__), errno = (err), -1)

/* For bad metadata met while reading: report with the guest offset,
 * set errno = EIO, evaluate to -1.
 */
#define READ_ERROR(img, guest, fs, ...)                                 \
  (image_error ("%s: guest offset %" PRIu64 ": " fs, (img)->path,       \
                (uint64_t) (guest), ##__VA_ARGS__),                     \
   errno = EIO, -1)

/* Copy len bytes of untrusted text into dst for a message, stopping at
 * a NUL and replacing anything unprintable.
 */
static void
sanitize (const void *src, size_t len, char *dst, size_t dst_size)
{
  const uint8_t *s = src;
  size_t i;

  for (i = 0; i < len && i + 1 < dst_size && s[i] != '\0'; ++i)
    dst[i] = s[i] >= 0x20 && s[i] < 0x7f ? s[i] : '?';
  dst[i] = '\0';
}

static bool
qcow2_probe (struct source *src, const uint8_t *buf, size_t len)
{
  /* qcow version 1 has the same magic; open explains that it is not
   * supported, which is better than serving it as a raw disk.
   */
  return len >= 4 && load_be32 (buf) == QCOW2_MAGIC;
}

/* True if [a, a + alen) and [b, b + blen) overlap (no end overflows). */
static bool
overlaps (uint64_t a, uint64_t alen, uint64_t b, uint64_t blen)
{
  return alen > 0 && blen > 0 && a < b + blen && b < a + alen;
}

/* What the header extensions told us. */
struct extensions {
  const uint8_t *feature_table;
  size_t feature_table_len;
  const uint8_t *backing_format;
  size_t backing_format_len;
  const uint8_t *data_file;
  size_t data_file_len;
  bool crypto_header;
};

/* Walk the header extensions in [start, end) of the first cluster
 * (hdr).  Extensions point into hdr, which must outlive ext.
 */
static int
parse_extensions (struct image *img, const uint8_t *hdr, size_t start,
                  size_t end, struct extensions *ext)
{
  size_t pos = start;

  memset (ext, 0, sizeof *ext);
  /* Fewer than 8 bytes left cannot hold an extension header: the area
   * simply ends there.
   */
  while (pos < end && end - pos >= 8) {
    uint32_t type = load_be32 (&hdr[pos]);
    uint32_t len = load_be32 (&hdr[pos + 4]);
    const uint8_t *data = &hdr[pos + 8];
    size_t padded;

    if (type == EXT_END)
      break;
    if (len > end - pos - 8)
      return OPEN_ERROR (EINVAL, "%s: header extension 0x%08" PRIx32
                         " at offset %zu (%" PRIu32 " bytes) extends past "
                         "the header area", img->path, type, pos, len);
    switch (type) {
    case EXT_BACKING_FORMAT:
      if (ext->backing_format == NULL) {
        ext->backing_format = data;
        ext->backing_format_len = len;
      }
      break;
    case EXT_FEATURE_TABLE:
      if (ext->feature_table == NULL) {
        ext->feature_table = data;
        ext->feature_table_len = len;
      }
      break;
    case EXT_DATA_FILE:
      if (ext->data_file == NULL) {
        ext->data_file = data;
        ext->data_file_len = len;
      }
      break;
    case EXT_CRYPTO_HEADER:
      ext->crypto_header = true;
      break;
    default:                    /* bitmaps and unknown: ignorable */
      break;
    }
    /* Data is padded to a multiple of 8; the last extension's padding
     * may be cut off by the end of the area.
     */
    padded = ((size_t) len + 7) & ~(size_t) 7;
    if (padded > end - pos - 8)
      break;
    pos += 8 + padded;
  }
  return 0;
}

/* Refuse the incompatible features we do not implement, naming them
 * from the image's own feature name table where it has one.
 */
static int
check_incompatible (struct image *img, uint64_t incompat,
                    const struct extensions *ext)
{
  uint64_t unknown = incompat & ~INCOMPAT_KNOWN;

  if (unknown != 0) {
    unsigned bit = __builtin_ctzll (unknown);
    const uint8_t *t = ext->feature_table;
    size_t i;

    for (i = 0; t != NULL && i + FEATURE_ENTRY_SIZE <= ext->feature_table_len;
         i += FEATURE_ENTRY_SIZE) {
      if (t[i] == 0 /* incompatible */ && t[i + 1] == bit) {
        char name[FEATURE_NAME_SIZE + 1];

        sanitize (&t[i + 2], FEATURE_NAME_SIZE, name, sizeof name);
        return OPEN_ERROR (ENOTSUP, "%s: unsupported incompatible feature "
                           "'%s' (bit %u)", img->path, name, bit);
      }
    }
    return OPEN_ERROR (ENOTSUP, "%s: unknown incompatible feature bit %u",
                       img->path, bit);
  }

  if (incompat & INCOMPAT_DATA_FILE) {
    if (ext->data_file != NULL) {
      char name[256];

      sanitize (ext->data_file, ext->data_file_len, name, sizeof name);
      return OPEN_ERROR (ENOTSUP, "%s: external data files are not "
                         "supported (data file '%s')", img->path, name);
    }
    return OPEN_ERROR (ENOTSUP, "%s: external data files are not supported",
                       img->path);
  }
  return 0;
}

/* The backing file format name from the extension, mapped to our
 * format names, or NULL (probe) when there is no extension.
 */
static int
backing_format (struct image *img, const struct extensions *ext,
                const char **format)
{
  static const struct { const char *qemu, *ours; } names[] = {
    { "qcow2", "qcow2" },
    { "raw", "raw" },
    { "parallels", "ploop" },
    { "vdi", "vdi" },
    { "vpc", "vhd" },
    { "vhdx", "vhdx" },
    { "vmdk", "vmdk" },
  };
  char name[64], known[128];
  size_t i, len = 0;

  *format = NULL;
  if (ext->backing_format == NULL)
    return 0;
  for (i = 0; i < sizeof names / sizeof names[0]; ++i) {
    if (ext->backing_format_len == strlen (names[i].qemu) &&
        memcmp (ext->backing_format, names[i].qemu,
                ext->backing_format_len) == 0) {
      *format = names[i].ours;
      return 0;
    }
  }
  /* Probing instead could serve e.g. a qed as raw: refuse. */
  sanitize (ext->backing_format, ext->backing_format_len, name, sizeof name);
  for (i = 0; i < sizeof names / sizeof names[0] && len < sizeof known; ++i)
    len += snprintf (known + len, sizeof known - len, "%s%s",
                     i ? ", " : "", names[i].qemu);
  return OPEN_ERROR (ENOTSUP, "%s: backing file format '%s' is not "
                     "supported (%s are)", img->path, name, known);
}

/* L1 table entries needed to map size bytes. */
static uint64_t
l1_entries_for (const struct qcow2 *q, uint64_t size)
{
  const uint64_t l2_mask = (UINT64_C (1) << q->l2_bits) - 1;
  uint64_t clusters = (size >> q->cluster_bits) +
    ((size & (q->cluster_size - 1)) != 0);

  return (clusters >> q->l2_bits) + ((clusters & l2_mask) != 0);
}

/* True if the len bytes at s are UTF-8 (RFC 3629: no overlong forms,
 * surrogates or code points past U+10FFFF) without control characters,
 * NUL included: snapshot names end up on terminals and in JSON.
 */
static bool
printable_utf8 (const uint8_t *s, size_t len)
{
  size_t i = 0, n, k;
  uint32_t c, min;

  while (i < len) {
    c = s[i];
    if (c < 0x80) {
      if (c < 0x20 || c == 0x7f)
        return false;
      i++;
      continue;
    }
    if (c >= 0xc2 && c <= 0xdf)
      n = 1, c &= 0x1f, min = 0x80;
    else if (c >= 0xe0 && c <= 0xef)
      n = 2, c &= 0x0f, min = 0x800;
    else if (c >= 0xf0 && c <= 0xf4)
      n = 3, c &= 0x07, min = 0x10000;
    else
      return false;
    if (len - i <= n)
      return false;
    for (k = 1; k <= n; ++k) {
      if ((s[i + k] & 0xc0) != 0x80)
        return false;
      c = (c << 6) | (s[i + k] & 0x3f);
    }
    /* C1 controls (U+0080 to U+009F) are control characters too. */
    if (c < min || c < 0xa0 || c > 0x10ffff || (c >= 0xd800 && c <= 0xdfff))
      return false;
    i += n + 1;
  }
  return true;
}

/* Read and check entry i of the snapshot table at *pos (table is where
 * the table starts), and move *pos to the next entry (8-byte aligned).
 * header_size is the virtual size for entries that do not record their
 * own; var has room for the largest variable part.
 */
static int
read_snapshot (struct image *img, struct qcow2 *q, uint32_t i,
               uint64_t table, uint64_t *pos, uint64_t header_size,
               uint8_t *var)
{
  struct image_snapshot *s = &q->snapshots[i];
  uint8_t h[SNAPSHOT_ENTRY_HEADER];
  const uint8_t *id, *name;
  uint64_t l1_offset, l1_end, end;
  uint32_t l1_size, extra_size;
  uint16_t id_size, name_size;

  if (*pos > q->file_size || q->file_size - *pos < sizeof h)
    return OPEN_ERROR (EINVAL, "%s: snapshot table entry %" PRIu32
                       " (offset %" PRIu64 ") is past the end of the file",
                       img->path, i, *pos);
  if (image_read_file (img, h, sizeof h, *pos, "snapshot table") == -1)
    return -1;
  l1_offset = load_be64 (&h[0]);
  l1_size = load_be32 (&h[8]);
  id_size = load_be16 (&h[12]);
  name_size = load_be16 (&h[14]);
  s->date = load_be32 (&h[16]);
  /* 20: nanoseconds of the date, 24: the guest's clock; unused. */
  s->vm_state_size = load_be32 (&h[32]);
  extra_size = load_be32 (&h[36]);

  if (extra_size > MAX_SNAPSHOT_EXTRA)
    return OPEN_ERROR (EINVAL, "%s: snapshot table entry %" PRIu32 " has %"
                       PRIu32 " bytes of extra data (limit %d)", img->path,
                       i, extra_size, MAX_SNAPSHOT_EXTRA);
  /* No overflow: *pos is inside the file, and the rest is small. */
  end = *pos + sizeof h + extra_size + id_size + name_size;
  if (end > q->file_size)
    return OPEN_ERROR (EINVAL, "%s: snapshot table entry %" PRIu32
                       " (offset %" PRIu64 ") extends past the end of the "
                       "file", img->path, i, *pos);
  if (end - table > MAX_SNAPSHOT_TABLE)
    return OPEN_ERROR (EINVAL, "%s: snapshot table is larger than %" PRIu64
                       " MiB", img->path, MAX_SNAPSHOT_TABLE >> 20);
  if (image_read_file (img, var, end - *pos - sizeof h, *pos + sizeof h,
                       "snapshot table") == -1)
    return -1;
  *pos = (end + 7) & ~UINT64_C (7);

  id = var + extra_size;
  name = id + id_size;
  if (!printable_utf8 (id, id_size) || !printable_utf8 (name, name_size))
    return OPEN_ERROR (EINVAL, "%s: snapshot table entry %" PRIu32 ": its "
                       "%s is not UTF-8 text without control characters",
                       img->path, i,
                       printable_utf8 (id, id_size) ? "name" : "id");
  s->id = strndup ((const char *) id, id_size);
  s->name = strndup ((const char *) name, name_size);
  if (s->id == NULL || s->name == NULL)
    return OPEN_ERROR (ENOMEM, "%s: %m", img->path);

  /* Extra data, as far as it goes: the large VM state size, then the
   * disk size (older images have neither and the header's size).
   */
  if (extra_size >= 8)
    s->vm_state_size = load_be64 (var);
  s->size = extra_size >= 16 ? load_be64 (var + 8) : header_size;
  if (s->size > INT64_MAX)
    return OPEN_ERROR (EINVAL, "%s: snapshot '%s': virtual size %" PRIu64
                       " is too large", img->path, s->name, s->size);

  if (l1_size > MAX_L1_BYTES / 8)
    return OPEN_ERROR (EINVAL, "%s: snapshot '%s': L1 table of %" PRIu32
                       " entries is too large (limit %" PRIu32 " MiB)",
                       img->path, s->name, l1_size, MAX_L1_BYTES >> 20);
  if (l1_entries_for (q, s->size) > l1_size)
    return OPEN_ERROR (EINVAL, "%s: snapshot '%s': virtual size %" PRIu64
                       " needs %" PRIu64 " L1 table entries but its L1 "
                       "table has %" PRIu32, img->path, s->name, s->size,
                       l1_entries_for (q, s->size), l1_size);
  if (l1_size > 0) {
    if (l1_offset & (q->cluster_size - 1))
      return OPEN_ERROR (EINVAL, "%s: snapshot '%s': L1 table offset %"
                         PRIu64 " is not cluster aligned", img->path,
                         s->name, l1_offset);
    if (l1_offset < q->cluster_size)
      return OPEN_ERROR (EINVAL, "%s: snapshot '%s': L1 table overlaps "
                         "the header", img->path, s->name);
    if (__builtin_add_overflow (l1_offset, (uint64_t) l1_size * 8, &l1_end)
        || l1_end > q->file_size)
      return OPEN_ERROR (EINVAL, "%s: snapshot '%s': L1 table (offset %"
                         PRIu64 ", %" PRIu32 " entries) extends past the "
                         "end of the file", img->path, s->name, l1_offset,
                         l1_size);
  }
  q->snapshot_l1[i] = (struct snapshot_l1) { l1_offset, l1_size };
  return 0;
}

/* Read and check the whole snapshot table: nb entries at offset.  Each
 * entry is at least its fixed part, so a count the file cannot hold is
 * refused before anything is allocated.
 */
static int
read_snapshots (struct image *img, struct qcow2 *q, uint32_t nb,
                uint64_t offset, uint64_t header_size)
{
  uint64_t pos = offset;
  uint8_t *var;
  uint32_t i;
  int r = 0;

  if (nb == 0)
    return 0;
  if (nb > MAX_SNAPSHOTS)
    return OPEN_ERROR (EINVAL, "%s: %" PRIu32 " snapshots are too many "
                       "(limit %d)", img->path, nb, MAX_SNAPSHOTS);
  if (offset & (q->cluster_size - 1))
    return OPEN_ERROR (EINVAL, "%s: snapshot table offset %" PRIu64 " is "
                       "not cluster aligned", img->path, offset);
  if (offset < q->cluster_size)
    return OPEN_ERROR (EINVAL, "%s: snapshot table overlaps the header",
                       img->path);
  if (offset > q->file_size ||
      (q->file_size - offset) / SNAPSHOT_ENTRY_HEADER < nb)
    return OPEN_ERROR (EINVAL, "%s: snapshot table (offset %" PRIu64 ", %"
                       PRIu32 " entries) extends past the end of the file",
                       img->path, offset, nb);

  q->snapshots = calloc (nb, sizeof *q->snapshots);
  q->snapshot_l1 = calloc (nb, sizeof *q->snapshot_l1);
  var = malloc (MAX_SNAPSHOT_EXTRA + 2 * UINT16_MAX);
  if (q->snapshots == NULL || q->snapshot_l1 == NULL || var == NULL) {
    free (var);
    return OPEN_ERROR (ENOMEM, "%s: %m", img->path);
  }
  q->n_snapshots = nb;          /* close frees what was read */
  for (i = 0; i < nb && r == 0; ++i)
    r = read_snapshot (img, q, i, offset, &pos, header_size, var);
  free (var);
  return r;
}

/* Serve the snapshot want, found by id first, then by name (as
 * qemu-img convert -l takes it): its L1 table and size replace the
 * active ones.
 */
static int
choose_snapshot (struct image *img, struct qcow2 *q, const char *want,
                 uint64_t *size, uint64_t *l1_offset)
{
  char list[512];
  size_t len = 0;
  uint32_t i, named = 0;
  long found = -1;

  for (i = 0; i < q->n_snapshots && found == -1; ++i)
    if (strcmp (q->snapshots[i].id, want) == 0)
      found = i;
  for (i = 0; i < q->n_snapshots && found == -1; ++i)
    if (strcmp (q->snapshots[i].name, want) == 0 && named++ == 0)
      found = i;
  for (; i < q->n_snapshots; ++i)
    named += strcmp (q->snapshots[i].name, want) == 0;
  if (named > 1)
    return OPEN_ERROR (ENXIO, "%s: %" PRIu32 " snapshots are called '%s'; "
                       "choose one by its id", img->path, named, want);

  if (found == -1) {
    list[0] = '\0';
    for (i = 0; i < q->n_snapshots && len < sizeof list; ++i)
      len += snprintf (list + len, sizeof list - len, "%s'%s' (id %s)",
                       i ? ", " : "", q->snapshots[i].name,
                       q->snapshots[i].id);
    if (len >= sizeof list)
      strcpy (list + sizeof list - 4, "...");
    return OPEN_ERROR (ENXIO, "%s: no snapshot called '%s' (%s%s)",
                       img->path, want, q->n_snapshots ? "it has " :
                       "it has no snapshots", list);
  }

  q->served = found;
  q->l1_size = q->snapshot_l1[found].size;
  *l1_offset = q->snapshot_l1[found].offset;
  *size = q->snapshots[found].size;
  return 0;
}

static int
compare_u64 (const void *a, const void *b)
{
  uint64_t x = *(const uint64_t *) a, y = *(const uint64_t *) b;

  return x < y ? -1 : x > y;
}

/* Check every L2 table the L1 table points at: inside the file, clear
 * of the header and the other tables, and none shared by two L1
 * entries (which would alias two guest ranges).  Counts the tables.
 */
static int
check_l1 (struct image *img, struct qcow2 *q, uint64_t l1_offset,
          uint64_t rt_offset, uint64_t rt_bytes, uint32_t *l2_tables)
{
  const uint64_t l1_bytes = (uint64_t) q->l1_size * 8;
  const uint64_t cs = q->cluster_size;
  uint64_t *sorted, dup = 0;
  uint32_t i, n = 0, first = 0;

  for (i = 0; i < q->l1_size; ++i) {
    uint64_t off = q->l1[i];

    if (off == 0)
      continue;
    if (off < cs)
      return OPEN_ERROR (EINVAL, "%s: L1 table entry %" PRIu32 " points "
                         "into the header (offset %" PRIu64 ")",
                         img->path, i, off);
    if (off & (cs - 1))
      return OPEN_ERROR (EINVAL, "%s: L1 table entry %" PRIu32 " points "
                         "at an unaligned L2 table (offset %" PRIu64 ")",
                         img->path, i, off);
    if (overlaps (off, cs, l1_offset, l1_bytes))
      return OPEN_ERROR (EINVAL, "%s: L1 table entry %" PRIu32 " points "
                         "into the L1 table (offset %" PRIu64 ")",
                         img->path, i, off);
    if (overlaps (off, cs, rt_offset, rt_bytes))
      return OPEN_ERROR (EINVAL, "%s: L1 table entry %" PRIu32 " points "
                         "into the refcount table (offset %" PRIu64 ")",
                         img->path, i, off);
    if (q->file_size < cs || off > q->file_size - cs)
      return OPEN_ERROR (EINVAL, "%s: L1 table entry %" PRIu32 " points "
                         "past the end of the file (offset %" PRIu64
                         ", file size %" PRIu64 ")",
                         img->path, i, off, q->file_size);
    n++;
  }
  *l2_tables = n;
  if (n < 2)
    return 0;

  /* Sort a copy to find a duplicate, then look up who shares it. */
  sorted = malloc ((size_t) n * sizeof *sorted);
  if (sorted == NULL)
    return OPEN_ERROR (ENOMEM, "%s: %m", img->path);
  n = 0;
  for (i = 0; i < q->l1_size; ++i)
    if (q->l1[i] != 0)
      sorted[n++] = q->l1[i];
  qsort (sorted, n, sizeof *sorted, compare_u64);
  for (i = 1; i < n && dup == 0; ++i)
    if (sorted[i] == sorted[i - 1])
      dup = sorted[i];
  free (sorted);
  if (dup == 0)
    return 0;

  for (i = 0; q->l1[i] != dup; ++i)
    ;
  first = i;
  for (i = first + 1; q->l1[i] != dup; ++i)
    ;
  return OPEN_ERROR (EINVAL, "%s: L1 table entries %" PRIu32 " and %" PRIu32
                     " point at the same L2 table (offset %" PRIu64 ")",
                     img->path, first, i, dup);
}

/* Size the L2 cache for the metadata there actually is (a small image
 * gets a small cache) and allocate it.
 */
static int
init_cache (struct image *img, struct qcow2 *q, uint32_t l2_tables)
{
  struct l2_cache *c = &q->cache;
  const size_t slice_bytes = (size_t) 1 << q->slice_bits;
  uint64_t slices = (uint64_t) l2_tables << (q->cluster_bits - q->slice_bits);
  uint32_t i;

  c->nslots = slices < 1 ? 1 : slices > CACHE_MAX_SLOTS ? CACHE_MAX_SLOTS
    : (uint32_t) slices;
  c->bucket_bits = 1;
  while ((UINT32_C (1) << c->bucket_bits) < 2 * c->nslots)
    c->bucket_bits++;
  c->hand = 0;
  c->keys = calloc (c->nslots, sizeof *c->keys);
  c->next = calloc (c->nslots, sizeof *c->next);
  c->buckets = malloc (sizeof *c->buckets << c->bucket_bits);
  c->referenced = calloc (c->nslots, 1);
  c->data = malloc (c->nslots * slice_bytes);
  if (c->keys == NULL || c->next == NULL || c->buckets == NULL ||
      c->referenced == NULL || c->data == NULL)
    return OPEN_ERROR (ENOMEM, "%s: %m", img->path);
  for (i = 0; i < (UINT32_C (1) << c->bucket_bits); ++i)
    c->buckets[i] = -1;

  if (pthread_mutex_init (&c->lock, NULL) != 0)
    return OPEN_ERROR (ENOMEM, "%s: cannot create the L2 cache lock",
                       img->path);
  q->cache_lock_ok = true;
  return 0;
}

/* Read the backing file name and open the backing chain (or warn that
 * it is not followed).
 */
static int
open_backing (struct image *img, struct qcow2 *q,
              const struct extensions *ext, uint64_t name_offset,
              uint32_t name_size, const struct image_options *opts,
              unsigned depth)
{
  const char *format;
  char *name;
  uint64_t name_end;
  int r = -1;

  if (name_size > MAX_BACKING_NAME)
    return OPEN_ERROR (EINVAL, "%s: backing file name is too long (%" PRIu32
                       " bytes, limit %d)", img->path, name_size,
                       MAX_BACKING_NAME);
  if (__builtin_add_overflow (name_offset, name_size, &name_end) ||
      name_end > q->file_size)
    return OPEN_ERROR (EINVAL, "%s: backing file name (offset %" PRIu64
                       ") extends past the end of the file", img->path,
                       name_offset);
  name = malloc (name_size + 1);
  if (name == NULL)
    return OPEN_ERROR (ENOMEM, "%s: %m", img->path);
  if (image_read_file (img, name, name_size, name_offset,
                       "backing file name") == -1)
    goto out;
  name[name_size] = '\0';
  if (strlen (name) != name_size) {
    r = OPEN_ERROR (EINVAL, "%s: backing file name contains a NUL byte",
                    img->path);
    goto out;
  }

  if (opts->backing == BACKING_NO) {
    char shown[MAX_BACKING_NAME + 1];

    sanitize (name, name_size, shown, sizeof shown);
    image_warning ("%s: backing file '%s' is not followed (backing=no): "
                   "unallocated areas read as zeros", img->path, shown);
    r = 0;
    goto out;
  }

  if (backing_format (img, ext, &format) == -1)
    goto out;
  /* It reports its own errors (policy, loops, depth, format). */
  img->backing = image_open_backing (img, name, format, opts, depth + 1);
  if (img->backing != NULL)
    r = 0;

 out:
  free (name);
  return r;
}

/* Parse and check everything; on success img is ready to read. */
static int
qcow2_parse (struct image *img, struct qcow2 *q,
             const struct image_options *opts, unsigned depth)
{
  uint8_t h[V3_HEADER_LENGTH];
  const uint8_t *hdr;
  size_t hdr_len, header_length, ext_end;
  struct extensions ext;
  uint64_t backing_offset, size, l1_offset, rt_offset, rt_bytes;
  uint64_t incompat = 0, l1_needed, l1_bytes, l1_end, snapshots_offset;
  uint32_t backing_size, cluster_bits, crypt, rt_clusters, l2_tables, i;
  uint32_t nb_snapshots;

  q->file_size = img->src->size;
  if (q->file_size < V2_HEADER_LENGTH)
    return OPEN_ERROR (EINVAL, "%s: file is too short for a qcow2 header",
                       img->path);
  hdr_len = q->file_size < V3_HEADER_LENGTH ? V2_HEADER_LENGTH
    : V3_HEADER_LENGTH;
  if (image_read_file (img, h, hdr_len, 0, "qcow2 header") == -1)
    return -1;

  if (load_be32 (&h[0]) != QCOW2_MAGIC)
    return OPEN_ERROR (EINVAL, "%s: not a qcow2 image (bad magic)",
                       img->path);
  img->version = q->version = load_be32 (&h[4]);
  if (q->version != 2 && q->version != 3)
    return OPEN_ERROR (ENOTSUP, "%s: qcow version %" PRIu32 " is not "
                       "supported (only qcow2 versions 2 and 3 are)",
                       img->path, q->version);
  backing_offset = load_be64 (&h[8]);
  backing_size = load_be32 (&h[16]);
  cluster_bits = load_be32 (&h[20]);
  size = load_be64 (&h[24]);
  crypt = load_be32 (&h[32]);
  q->l1_size = load_be32 (&h[36]);
  l1_offset = load_be64 (&h[40]);
  rt_offset = load_be64 (&h[48]);
  rt_clusters = load_be32 (&h[56]);
  nb_snapshots = load_be32 (&h[60]);
  snapshots_offset = load_be64 (&h[64]);

  if (cluster_bits < MIN_CLUSTER_BITS || cluster_bits > MAX_CLUSTER_BITS)
    return OPEN_ERROR (EINVAL, "%s: invalid cluster_bits %" PRIu32
                       " (must be %d to %d)", img->path, cluster_bits,
                       MIN_CLUSTER_BITS, MAX_CLUSTER_BITS);
  q->cluster_bits = cluster_bits;
  q->cluster_size = UINT64_C (1) << cluster_bits;
  if (crypt != 0)
    return OPEN_ERROR (ENOTSUP, "%s: encryption is not supported "
                       "(crypt_method %" PRIu32 ")", img->path, crypt);

  if (q->version == 2)
    header_length = V2_HEADER_LENGTH;
  else {
    if (hdr_len < V3_HEADER_LENGTH)
      return OPEN_ERROR (EINVAL, "%s: file is too short for a qcow2 v3 "
                         "header", img->path);
    incompat = load_be64 (&h[72]);
    header_length = load_be32 (&h[100]);
    if (header_length < V3_HEADER_LENGTH || header_length % 8 != 0 ||
        header_length > q->cluster_size)
      return OPEN_ERROR (EINVAL, "%s: invalid header_length %zu (must be "
                         "a multiple of 8 from %d to the cluster size)",
                         img->path, header_length, V3_HEADER_LENGTH);
    if (header_length > q->file_size)
      return OPEN_ERROR (EINVAL, "%s: file is too short for its header "
                         "(%zu bytes)", img->path, header_length);
  }

  /* Header extensions live in the rest of the first cluster. */
  hdr_len = q->file_size < q->cluster_size ? q->file_size : q->cluster_size;
  q->header = malloc (hdr_len);
  if (q->header == NULL)
    return OPEN_ERROR (ENOMEM, "%s: %m", img->path);
  hdr = q->header;
  if (image_read_file (img, q->header, hdr_len, 0, "qcow2 header cluster")
      == -1)
    return -1;
  /* Images written before extensions existed have the backing file
   * name right after the header, and no end marker: stop there.
   */
  ext_end = hdr_len;
  if (backing_offset != 0 && backing_offset < ext_end)
    ext_end = backing_offset;
  memset (&ext, 0, sizeof ext);
  if (header_length < ext_end &&
      parse_extensions (img, hdr, header_length, ext_end, &ext) == -1)
    return -1;

  if (ext.crypto_header)
    return OPEN_ERROR (ENOTSUP, "%s: encryption is not supported (full "
                       "disk encryption header present)", img->path);
  if (check_incompatible (img, incompat, &ext) == -1)
    return -1;

  q->compression = COMPRESSION_DEFLATE;
  if (header_length > V3_HEADER_LENGTH)
    q->compression = hdr[V3_HEADER_LENGTH];
  if (q->compression != COMPRESSION_DEFLATE &&
      q->compression != COMPRESSION_ZSTD)
    return OPEN_ERROR (ENOTSUP, "%s: unknown compression type %u",
                       img->path, q->compression);
  if (!!(incompat & INCOMPAT_COMPRESSION) !=
      (q->compression != COMPRESSION_DEFLATE))
    return OPEN_ERROR (EINVAL, "%s: compression type %u does not agree "
                       "with the compression type feature bit", img->path,
                       q->compression);

  /* Only v3 has incompatible feature bits, so v2 never gets here with
   * extended L2 entries.
   */
  q->extended_l2 = (incompat & INCOMPAT_EXTL2) != 0;
  if (q->extended_l2 && cluster_bits < MIN_EXTL2_CLUSTER_BITS)
    return OPEN_ERROR (EINVAL, "%s: extended L2 entries need clusters of "
                       "at least %d bytes (cluster size is %" PRIu64 ")",
                       img->path, 1 << MIN_EXTL2_CLUSTER_BITS,
                       q->cluster_size);
  q->entry_words = q->extended_l2 ? 2 : 1;
  q->l2_bits = cluster_bits - (q->extended_l2 ? 4 : 3);
  q->subcluster_bits = cluster_bits - 5;
  q->slice_bits = cluster_bits < 12 ? cluster_bits : 12;
  q->slice_entries =
    UINT32_C (1) << (q->slice_bits - (q->extended_l2 ? 4 : 3));
  q->compressed_shift = 62 - (cluster_bits - 8);
  q->compressed_offset_mask = (UINT64_C (1) << q->compressed_shift) - 1;
  q->compressed_sectors_mask = (UINT64_C (1) << (cluster_bits - 8)) - 1;

  if (size > INT64_MAX)
    return OPEN_ERROR (EINVAL, "%s: virtual size %" PRIu64 " is too large",
                       img->path, size);
  q->served = -1;
  if (read_snapshots (img, q, nb_snapshots, snapshots_offset, size) == -1)
    return -1;
  /* Backing files are always read in their active state. */
  if (depth == 0 && opts->snapshot != NULL &&
      choose_snapshot (img, q, opts->snapshot, &size, &l1_offset) == -1)
    return -1;

  /* The virtual size served and the L1 table that must cover it. */
  l1_needed = l1_entries_for (q, size);
  if (q->l1_size > MAX_L1_BYTES / 8)
    return OPEN_ERROR (EINVAL, "%s: L1 table of %" PRIu32 " entries is too "
                       "large (limit %" PRIu32 " MiB)", img->path,
                       q->l1_size, MAX_L1_BYTES >> 20);
  if (l1_needed > q->l1_size)
    return OPEN_ERROR (EINVAL, "%s: virtual size %" PRIu64 " needs %" PRIu64
                       " L1 table entries but the L1 table has %" PRIu32,
                       img->path, size, l1_needed, q->l1_size);
  l1_bytes = (uint64_t) q->l1_size * 8;
  if (q->l1_size > 0) {
    if (l1_offset & (q->cluster_size - 1))
      return OPEN_ERROR (EINVAL, "%s: L1 table offset %" PRIu64 " is not "
                         "cluster aligned", img->path, l1_offset);
    if (l1_offset < q->cluster_size)
      return OPEN_ERROR (EINVAL, "%s: L1 table overlaps the header",
                         img->path);
    if (__builtin_add_overflow (l1_offset, l1_bytes, &l1_end) ||
        l1_end > q->file_size)
      return OPEN_ERROR (EINVAL, "%s: L1 table (offset %" PRIu64 ", %"
                         PRIu32 " entries) extends past the end of the file",
                         img->path, l1_offset, q->l1_size);
  }

  /* The refcount table is never read, only kept clear of L2 tables. */
  rt_bytes = (uint64_t) rt_clusters << cluster_bits;
  if (rt_offset > UINT64_MAX - rt_bytes)
    return OPEN_ERROR (EINVAL, "%s: refcount table (offset %" PRIu64 ", %"
                       PRIu32 " clusters) is out of range", img->path,
                       rt_offset, rt_clusters);

  /* One spare entry so that an empty table is still a valid malloc. */
  q->l1 = malloc (l1_bytes + 8);
  if (q->l1 == NULL)
    return OPEN_ERROR (ENOMEM, "%s: %m", img->path);
  if (q->l1_size > 0 &&
      image_read_file (img, q->l1, l1_bytes, l1_offset, "L1 table") == -1)
    return -1;
  /* Only the offset matters for reading: bit 63 (refcount is one) and
   * the reserved bits are ignored, as they are by QEMU.
   */
  for (i = 0; i < q->l1_size; ++i)
    q->l1[i] = be64toh (q->l1[i]) & OFFSET_MASK;
  if (check_l1 (img, q, l1_offset, rt_offset, rt_bytes, &l2_tables) == -1 ||
      init_cache (img, q, l2_tables) == -1)
    return -1;

  img->size = size;
  img->block_size = q->extended_l2 ? UINT32_C (1) << q->subcluster_bits
    : (uint32_t) q->cluster_size;

  /* Neither matters to a reader that ignores refcounts and never
   * writes, but the user should know.
   */
  if (incompat & INCOMPAT_DIRTY) {
    img->dirty = true;
    image_warning ("%s: image is marked dirty (not closed cleanly, "
                   "refcounts may be stale); reading it anyway", img->path);
  }
  if (incompat & INCOMPAT_CORRUPT)
    image_warning ("%s: image is marked corrupt; reading it anyway, "
                   "some data may be wrong or unreadable", img->path);

  /* Backing file, last: it opens a whole chain below us. */
  if (backing_offset != 0 && backing_size != 0)
    return open_backing (img, q, &ext, backing_offset, backing_size, opts,
                         depth);
  return 0;
}

static struct image *
qcow2_open (const char *path, struct source *src,
            const struct image_options *opts, unsigned depth)
{
  struct image *img;
  struct qcow2 *q;
  int r;

  img = image_alloc (&qcow2_ops, path, src, sizeof *q);
  if (img == NULL)
    return NULL;
  q = img->priv;
  q->clusters = image_block_cache ();
  q->owner = cache_new_owner ();
  r = q->clusters ? qcow2_parse (img, q, opts, depth) : -1;
  /* The first cluster is only needed while parsing. */
  free (q->header);
  q->header = NULL;
  if (r == -1)
    return image_open_failed (img);
  return img;
}

static void
qcow2_close (struct image *img)
{
  struct qcow2 *q = img->priv;

  if (q->cache_lock_ok)
    pthread_mutex_destroy (&q->cache.lock);
  free (q->cache.keys);
  free (q->cache.next);
  free (q->cache.buckets);
  free (q->cache.referenced);
  free (q->cache.data);
  free (q->l1);
  free (q->header);
  for (uint32_t i = 0; i < q->n_snapshots; ++i) {
    free (q->snapshots[i].id);
    free (q->snapshots[i].name);
  }
  free (q->snapshots);
  free (q->snapshot_l1);
}

void
image_list_snapshots (struct image *img,
                      const struct image_snapshot **snapshots, size_t *n,
                      long *served)
{
  const struct qcow2 *q = img->priv;

  *snapshots = NULL;
  *n = 0;
  *served = -1;
  if (img->ops != &qcow2_ops)
    return;
  *snapshots = q->snapshots;
  *n = q->n_snapshots;
  *served = q->served;
}

/* L2 cache. */

/* Hash bucket of a slice (keys are multiples of the slice size). */
static uint32_t
cache_bucket (const struct qcow2 *q, uint64_t key)
{
  return ((key >> q->slice_bits) * UINT64_C (0x9e3779b97f4a7c15))
    >> (64 - q->cache.bucket_bits);
}

/* Slot holding key, or -1.  Call with the lock held. */
static int32_t
cache_find (const struct qcow2 *q, uint64_t key)
{
  int32_t i;

  for (i = q->cache.buckets[cache_bucket (q, key)]; i >= 0;
       i = q->cache.next[i])
    if (q->cache.keys[i] == key)
      return i;
  return -1;
}

/* Store a slice, evicting the first slot the clock finds unreferenced
 * since its last pass.  Call with the lock held.
 */
static void
cache_insert (struct qcow2 *q, uint64_t key, const uint64_t *slice)
{
  struct l2_cache *c = &q->cache;
  const size_t slice_words = ((size_t) 1 << q->slice_bits) / 8;
  int32_t victim, *link;

  for (;;) {
    victim = c->hand;
    c->hand = (c->hand + 1) % c->nslots;
    if (!c->referenced[victim])
      break;
    c->referenced[victim] = 0;
  }

  if (c->keys[victim] != 0) {
    link = &c->buckets[cache_bucket (q, c->keys[victim])];
    while (*link != victim)
      link = &c->next[*link];
    *link = c->next[victim];
  }
  c->keys[victim] = key;
  link = &c->buckets[cache_bucket (q, key)];
  c->next[victim] = *link;
  *link = victim;
  c->referenced[victim] = 1;
  memcpy (&c->data[victim * slice_words], slice, slice_words * 8);
}

/* Copy the slice at file offset key into dst (host byte order).  The
 * file is read without the lock held: two threads missing the same
 * slice both read it, which is harmless and rare.
 */
static int
cache_get (struct image *img, uint64_t key, uint64_t *dst)
{
  struct qcow2 *q = img->priv;
  struct l2_cache *c = &q->cache;
  const size_t slice_words = ((size_t) 1 << q->slice_bits) / 8;
  int32_t i;
  size_t w;

  pthread_mutex_lock (&c->lock);
  i = cache_find (q, key);
  if (i >= 0) {
    c->referenced[i] = 1;
    memcpy (dst, &c->data[i * slice_words], slice_words * 8);
    pthread_mutex_unlock (&c->lock);
    return 0;
  }
  pthread_mutex_unlock (&c->lock);

  if (image_read_file (img, dst, slice_words * 8, key, "L2 table") == -1)
    return -1;
  for (w = 0; w < slice_words; ++w)
    dst[w] = be64toh (dst[w]);

  pthread_mutex_lock (&c->lock);
  if (cache_find (q, key) < 0)
    cache_insert (q, key, dst);
  pthread_mutex_unlock (&c->lock);
  return 0;
}

/* Mapping. */

/* Point the window at the slice holding guest cluster, or at the whole
 * L2 range around it if its L1 entry is unallocated.
 */
static int
fill_window (struct image *img, struct window *w, uint64_t cluster)
{
  struct qcow2 *q = img->priv;
  uint64_t l1_index = cluster >> q->l2_bits;
  uint64_t index, start, l2;

  w->n = 0;
  /* open checked that the L1 table covers the virtual size. */
  if (l1_index >= q->l1_size)
    return READ_ERROR (img, cluster << q->cluster_bits,
                       "beyond the L1 table");
  l2 = q->l1[l1_index];
  if (l2 == 0) {
    w->unallocated = true;
    w->first = l1_index << q->l2_bits;
    w->n = UINT64_C (1) << q->l2_bits;
    return 0;
  }

  index = cluster & ((UINT64_C (1) << q->l2_bits) - 1);
  start = index & ~(uint64_t) (q->slice_entries - 1);
  if (cache_get (img, l2 + start * q->entry_words * 8, w->words) == -1)
    return -1;
  w->unallocated = false;
  w->first = cluster - (index - start);
  w->n = q->slice_entries;
  return 0;
}

/* Check a data cluster's host offset before it is used.  Quietly (no
 * message) when only looking ahead to extend a run: the entry will be
 * reported, with its own guest offset, when the run gets to it.
 */
static int
check_data_cluster (struct image *img, uint64_t guest, uint64_t host,
                    bool report)
{
  struct qcow2 *q = img->priv;

  if (host >= q->cluster_size && (host & (q->cluster_size - 1)) == 0 &&
      host < q->file_size)
    return 0;
  if (!report)
    return -1;
  if (host < q->cluster_size)
    return READ_ERROR (img, guest, "data cluster points into the header "
                       "(host offset %" PRIu64 ")", host);
  if (host & (q->cluster_size - 1))
    return READ_ERROR (img, guest, "data cluster host offset %" PRIu64
                       " is not cluster aligned", host);
  return READ_ERROR (img, guest, "data cluster host offset %" PRIu64
                     " is past the end of the file (%" PRIu64 " bytes)",
                     host, q->file_size);
}

/* What subcluster sc of an extended L2 entry is. */
static enum image_run_kind
subcluster_kind (uint32_t alloc, uint32_t zero, unsigned sc)
{
  if (alloc & (UINT32_C (1) << sc))
    return IMAGE_RUN_DATA;
  if (zero & (UINT32_C (1) << sc))
    return IMAGE_RUN_ZERO;
  return IMAGE_RUN_BACKING;
}

/* The run of one kind starting at byte within of guest cluster (which
 * the window holds), up to the end of the cluster at most.  Bad entries
 * fail, with a message only if report is set.
 */
static int
cluster_run (struct image *img, const struct window *w, uint64_t cluster,
             uint64_t within, bool report, struct image_run *r)
{
  struct qcow2 *q = img->priv;
  const uint64_t guest = (cluster << q->cluster_bits) + within;
  const uint64_t i = (cluster - w->first) * q->entry_words;
  const uint64_t entry = w->words[i];
  const uint64_t host = entry & OFFSET_MASK;

  *r = (struct image_run) { .length = q->cluster_size - within };

  if (entry & L2E_COMPRESSED) {
    uint64_t chost = entry & q->compressed_offset_mask;

    if (chost < q->cluster_size || chost >= q->file_size) {
      if (!report)
        return -1;
      if (chost < q->cluster_size)
        return READ_ERROR (img, guest, "compressed cluster points into "
                           "the header (host offset %" PRIu64 ")", chost);
      return READ_ERROR (img, guest, "compressed cluster host offset %"
                         PRIu64 " is past the end of the file (%" PRIu64
                         " bytes)", chost, q->file_size);
    }
    r->kind = IMAGE_RUN_DECODED;
    r->token[0] = entry;
    return 0;
  }

  if (!q->extended_l2) {
    if (q->version >= 3 && (entry & L2E_ZERO)) {
      r->kind = IMAGE_RUN_ZERO;
      r->hole = host == 0;
    }
    else if (host == 0)
      r->kind = IMAGE_RUN_BACKING;
    else {
      if (check_data_cluster (img, guest, host, report) == -1)
        return -1;
      r->kind = IMAGE_RUN_DATA;
      r->host = host + within;
    }
    return 0;
  }

  /* Extended L2: 32 subclusters, each allocated, zero or unallocated. */
  {
    const uint64_t bitmap = w->words[i + 1];
    const uint32_t alloc = bitmap, zero = bitmap >> 32;
    const unsigned sc = within >> q->subcluster_bits;
    unsigned sc_end;

    if (alloc & zero) {
      if (!report)
        return -1;
      return READ_ERROR (img, guest, "extended L2 entry has subclusters "
                         "both allocated and zero (bitmap 0x%016" PRIx64 ")",
                         bitmap);
    }
    if (alloc != 0 && host == 0) {
      if (!report)
        return -1;
      return READ_ERROR (img, guest, "extended L2 entry has allocated "
                         "subclusters but no host cluster");
    }
    if (alloc != 0 && check_data_cluster (img, guest, host, report) == -1)
      return -1;

    r->kind = subcluster_kind (alloc, zero, sc);
    for (sc_end = sc + 1; sc_end < 32; ++sc_end)
      if (subcluster_kind (alloc, zero, sc_end) != r->kind)
        break;
    r->length = ((uint64_t) sc_end << q->subcluster_bits) - within;
    if (r->kind == IMAGE_RUN_DATA)
      r->host = host + within;
    else if (r->kind == IMAGE_RUN_ZERO)
      r->hole = host == 0;
    return 0;
  }
}

/* How the guest range starting at offset (< end) is stored: the longest
 * run of one kind that the window (kept in the map state) can tell,
 * through following clusters of the same kind, data only while it is
 * contiguous in the file; the window is refilled first if needed.  Data
 * past the end of the file (a last cluster cut short) reads as zeros, as
 * it does for QEMU.
 */
static int
qcow2_map (struct image *img, struct image_map_state *state,
           uint64_t offset, uint64_t end, bool for_extents,
           struct image_run *r)
{
  struct qcow2 *q = img->priv;
  struct window *w = (struct window *) state->words;
  const uint64_t cs = q->cluster_size;
  uint64_t cluster = offset >> q->cluster_bits;
  uint64_t pos;

  if (w->n == 0 || cluster < w->first || cluster - w->first >= w->n) {
    if (fill_window (img, w, cluster) == -1)
      return -1;
  }

  if (w->unallocated) {
    /* No overflow: the L1 table is limited to 2^22 entries, each
     * mapping at most 2^39 bytes.
     */
    uint64_t limit = (w->first + w->n) << q->cluster_bits;

    *r = (struct image_run) {
      .kind = IMAGE_RUN_BACKING,
      .length = (end < limit ? end : limit) - offset,
    };
    return 0;
  }

  if (cluster_run (img, w, cluster, offset & (cs - 1), true, r) == -1)
    return -1;

  /* offset < size <= INT64_MAX, so pos cannot overflow. */
  pos = offset + r->length;
  while (pos < end && r->kind != IMAGE_RUN_DECODED && (pos & (cs - 1)) == 0) {
    struct image_run next;

    cluster++;
    if (cluster - w->first >= w->n ||
        cluster_run (img, w, cluster, 0, false, &next) == -1 ||
        next.kind != r->kind || next.hole != r->hole ||
        (r->kind == IMAGE_RUN_DATA && next.host != r->host + r->length))
      break;
    r->length += next.length;
    pos += next.length;
  }

  if (r->length > end - offset)
    r->length = end - offset;
  if (r->kind == IMAGE_RUN_DATA && r->host + r->length > q->file_size) {
    if (r->host < q->file_size)
      r->length = q->file_size - r->host;
    else
      *r = (struct image_run) {
        .kind = IMAGE_RUN_ZERO, .length = r->length,
      };
  }
  return 0;
}

/* Reading. */

struct compressed_load {
  struct image *img;
  uint64_t entry;               /* L2 entry of the compressed cluster */
  uint64_t guest;               /* for messages */
};

/* Read and decompress a compressed cluster into buf (a whole cluster). */
static int
load_compressed (void *opaque, void *buf)
{
  const struct compressed_load *req = opaque;
  struct image *img = req->img;
  struct qcow2 *q = img->priv;
  const uint64_t host = req->entry & q->compressed_offset_mask;
  const uint64_t sectors =
    ((req->entry >> q->compressed_shift) & q->compressed_sectors_mask) + 1;
  /* The data starts at host and runs to the end of its last sector;
   * cluster_run checked that host is inside the file, and the end of the
   * file may cut the last sector short.
   */
  uint64_t in_len = sectors * SECTOR - (host % SECTOR);
  char *in;
  int r;

  if (in_len > q->file_size - host)
    in_len = q->file_size - host;
  in = thread_scratch (in_len);
  if (in == NULL) {
    image_error ("%s: %m", img->path);
    return -1;
  }
  if (image_read_file (img, in, in_len, host, "compressed cluster") == -1)
    return -1;
  if (q->compression == COMPRESSION_ZSTD)
    r = decompress_zstd (in, in_len, buf, q->cluster_size);
  else
    r = decompress_deflate_raw (in, in_len, buf, q->cluster_size);
  if (r == -1)
    return READ_ERROR (img, req->guest, "cannot decompress the %s "
                       "compressed cluster at host offset %" PRIu64
                       " (%" PRIu64 " bytes)",
                       q->compression == COMPRESSION_ZSTD ? "zstd"
                       : "deflate", host, in_len);
  return 0;
}

/* Read len bytes at guest offset from a compressed cluster (the run's
 * token is its L2 entry) through the shared block cache, keyed by the
 * entry, which locates the data completely; an image is never written,
 * so entries never go stale.  A whole cluster that is not cached goes
 * straight into the reply and is not kept: keeping a copy made a
 * sequential read of a compressed image 1.3x slower (fresh cache memory
 * faulted in for every cluster), and whole-cluster readers rarely come
 * back for the same cluster; parts of clusters are what the cache is for.
 */
static int
qcow2_read_decoded (struct image *img, const struct image_run *run,
                    void *buf, size_t len, uint64_t guest)
{
  struct qcow2 *q = img->priv;
  struct compressed_load req = {
    .img = img, .entry = run->token[0], .guest = guest,
  };

  const struct cache_block b = {
    .owner = q->owner, .key = req.entry, .size = q->cluster_size,
  };

  return cache_read (q->clusters, &b, load_compressed, &req, buf,
                     guest & (q->cluster_size - 1), len, CACHE_WHOLE_DIRECT);
}

const struct image_ops qcow2_ops = {
  .name = "qcow2",
  .snapshots = true,
  .probe = qcow2_probe,
  .open = qcow2_open,
  .map = qcow2_map,
  .read_decoded = qcow2_read_decoded,
  .close = qcow2_close,
};
