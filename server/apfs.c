/* SPDX-License-Identifier: BSD-3-Clause */
/* APFS: which volumes a container holds, and their names.
 *
 * libblkid says "apfs" for the container superblock (NXSB) in block 0.
 * The helper guest's apfs module (linux-apfs-rw, which build-guest
 * builds) mounts one volume of the container, chosen by its slot in the
 * superblock's nx_fs_oid[] (vol=N); a slot without a volume is 0.  The
 * copy in block 0 is the one written when the container was last
 * unmounted cleanly: newer checkpoints, which the module reads, may
 * differ from it after a crash.
 *
 * A volume's name and role are in its own superblock (APSB), whose
 * nx_fs_oid[] entry is a virtual object id: the container's object map
 * (a B-tree of (oid, xid) -> block, with fixed-size entries) says which
 * block holds it as of the container's last transaction.  The layouts
 * are those of Apple's "Apple File System Reference".  Every block we
 * use is inside the container and has a correct checksum, else we warn
 * once, naming the block, and the volumes are listed without names.
 */

#include <config.h>

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bytes.h"
#include "image.h"
#include "qemount.h"

/* obj_phys_t, the header of every object. */
#define O_CKSUM_AT 0
#define O_OID_AT 8
#define O_TYPE_AT 24
#define OBJ_BYTES 32
#define TYPE_MASK 0xffff
#define TYPE_BTREE 2            /* a B-tree's root node */
#define TYPE_BTREE_NODE 3       /* its other nodes */
#define TYPE_OMAP 0xb
#define TYPE_FS 0xd

/* nx_superblock_t */
#define MAGIC_AT 32             /* nx_magic, "NXSB" */
#define BLOCK_SIZE_AT 36        /* nx_block_size */
#define NEXT_XID_AT 96          /* nx_next_xid */
#define OMAP_OID_AT 160         /* nx_omap_oid, a block address */
#define MAX_FS_AT 0xb4          /* nx_max_file_systems */
#define FS_OIDS_AT 0xb8         /* nx_fs_oid[APFS_MAX_VOLUMES] */
#define SB_BYTES (FS_OIDS_AT + APFS_MAX_VOLUMES * 8)
#define MIN_BLOCK 4096
#define MAX_BLOCK 65536

/* omap_phys_t */
#define OM_TREE_OID_AT 48       /* om_tree_oid, a block address */

/* btree_node_phys_t, and the btree_info_t that ends a root node. */
#define BTN_FLAGS_AT 32
#define BTN_LEVEL_AT 34
#define BTN_NKEYS_AT 36
#define BTN_TOC_AT 40           /* btn_table_space: offset, length */
#define BTN_DATA_AT 56
#define BTNODE_ROOT 0x1
#define BTNODE_LEAF 0x2
#define BTNODE_FIXED_KV_SIZE 0x4
#define BTREE_INFO_BYTES 40
#define TOC_ENTRY_BYTES 4       /* kvoff_t: key offset, value offset */
#define OMAP_KEY_BYTES 16       /* omap_key_t: oid, xid */
#define OMAP_VAL_BYTES 16       /* omap_val_t: flags, size, paddr */
#define CHILD_BYTES 8           /* a non-leaf node's value: its child */
#define OMAP_VAL_DELETED 0x1
/* The object map of a container with 100 volumes and many snapshots is
 * a few levels deep; this bounds the walk of a hostile one (each level
 * reads one node, so it bounds the nodes read per volume too).
 */
#define MAX_DEPTH 8            /* levels 0 to 7 */

/* apfs_superblock_t */
#define APSB_MAGIC_AT 32        /* apfs_magic, "APSB" */
#define VOLNAME_AT 704          /* apfs_volname[256], UTF-8, NUL-ended */
#define VOLNAME_BYTES 256
#define ROLE_AT 964             /* apfs_role */

struct container {
  struct image *img;
  uint64_t start;               /* bytes */
  uint64_t blocks;              /* that fit in the partition */
  uint32_t block_size;
  uint64_t xid;                 /* the last transaction's */
  uint8_t *block;               /* the one read last */
};

/* Fletcher-64 over 32-bit words as the reference defines it: the
 * checksum of the object past its own o_cksum field.
 */
static uint64_t
fletcher64 (const uint8_t *p, size_t len)
{
  const uint64_t mod = 0xffffffff;
  uint64_t s1 = 0, s2 = 0, c1, c2;

  for (size_t i = 0; i + 4 <= len; i += 4) {
    s1 = (s1 + load_le32 (p + i)) % mod;
    s2 = (s2 + s1) % mod;
  }
  c1 = mod - (s1 + s2) % mod;
  c2 = mod - (s1 + c1) % mod;
  return c2 << 32 | c1;
}

/* Block paddr of the container into c->block, checked to be an object
 * of that type (what: for the warning).  -1 (said) if it is not.
 */
static int
read_object (struct container *c, uint64_t paddr, uint32_t type,
             const char *what)
{
  const char *why = NULL;

  if (paddr == 0 || paddr >= c->blocks)
    why = "is outside the container";
  else if (image_pread (c->img, c->block, c->block_size,
                        c->start + paddr * c->block_size) == -1)
    return -1;
  else if (load_le64 (c->block + O_CKSUM_AT) !=
           fletcher64 (c->block + 8, c->block_size - 8))
    why = "has a wrong checksum";
  else if ((load_le32 (c->block + O_TYPE_AT) & TYPE_MASK) != type)
    why = "is not of its type";
  if (why) {
    warnf ("%s: APFS block %" PRIu64 " (%s) %s: volume names not read",
           c->img->path, paddr, what, why);
    return -1;
  }
  return 0;
}

/* The block holding the newest version of virtual object oid that is
 * not newer than the container's last transaction, from the object map
 * B-tree rooted at block root: 1 and *paddr, 0 if the map has none, -1
 * (said) if the tree is broken.
 */
static int
omap_lookup (struct container *c, uint64_t root, uint64_t oid,
             uint64_t *paddr)
{
  uint64_t node = root;
  unsigned level = 0;           /* the parent's */

  for (unsigned depth = 0; ; ++depth) {
    const uint8_t *b = c->block;
    uint16_t flags, here, toc_at, toc_len;
    uint32_t n, keys_at, vals_end;
    uint64_t best_xid = 0, next = 0;
    bool have = false, deleted = false, leaf;
    const char *why = NULL;

    if (read_object (c, node, depth ? TYPE_BTREE_NODE : TYPE_BTREE,
                     "a node of the object map") == -1)
      return -1;
    flags = load_le16 (b + BTN_FLAGS_AT);
    here = load_le16 (b + BTN_LEVEL_AT);
    n = load_le32 (b + BTN_NKEYS_AT);
    toc_at = load_le16 (b + BTN_TOC_AT);
    toc_len = load_le16 (b + BTN_TOC_AT + 2);
    keys_at = BTN_DATA_AT + toc_at + toc_len;
    vals_end = c->block_size - (depth ? 0 : BTREE_INFO_BYTES);
    leaf = flags & BTNODE_LEAF;
    /* Levels count down to the leaves at 0, one per step, so a child
     * pointing back up the tree is refused as the wrong level.
     */
    if (depth > 0 && here != level - 1)
      why = "is not at the level below its parent";
    else if (here >= MAX_DEPTH)
      why = "is more than 7 levels above its leaves";
    else if (!!(flags & BTNODE_ROOT) != (depth == 0))
      why = "has a wrong root flag";
    else if (leaf != (here == 0))
      why = "has a wrong leaf flag";
    else if (!(flags & BTNODE_FIXED_KV_SIZE))
      why = "does not have fixed-size entries";
    else if (keys_at > vals_end || (uint64_t) n * TOC_ENTRY_BYTES > toc_len)
      why = "has more entries than room for them";
    for (uint32_t i = 0; why == NULL && i < n; ++i) {
      const uint8_t *e = b + BTN_DATA_AT + toc_at + i * TOC_ENTRY_BYTES;
      uint32_t k = keys_at + load_le16 (e);
      uint32_t v = load_le16 (e + 2);
      uint32_t vlen = leaf ? OMAP_VAL_BYTES : CHILD_BYTES;
      uint64_t koid, kxid;

      if (k + OMAP_KEY_BYTES > vals_end || v < vlen ||
          v > vals_end - keys_at) {
        why = "has an entry outside it";
        break;
      }
      v = vals_end - v;
      koid = load_le64 (b + k);
      kxid = load_le64 (b + k + 8);
      if (!leaf) {
        /* Sorted keys: the child for oid is the last not after it. */
        if (koid < oid || (koid == oid && kxid <= c->xid))
          next = load_le64 (b + v);
      }
      else if (koid == oid && kxid <= c->xid && (!have || kxid > best_xid)) {
        have = true;
        deleted = load_le32 (b + v) & OMAP_VAL_DELETED;
        best_xid = kxid;
        *paddr = load_le64 (b + v + 8);
      }
    }
    if (why) {
      warnf ("%s: APFS block %" PRIu64 " (a node of the object map) %s: "
             "volume names not read", c->img->path, node, why);
      return -1;
    }
    if (leaf)
      return have && !deleted;
    if (next == 0)
      return 0;
    node = next;
    level = here;
  }
}

/* The name and role of volume i (virtual object oid) into v, or a
 * warning and no name.
 */
static void
read_volume (struct container *c, uint64_t omap_root, int i, uint64_t oid,
             struct apfs_volume *v)
{
  const uint8_t *b = c->block;
  char what[64];
  uint64_t paddr = 0;
  int r = omap_lookup (c, omap_root, oid, &paddr);

  if (r == 0)
    warnf ("%s: APFS volume %d (object %" PRIu64 ") is not in the "
           "container's object map: its name is not read",
           c->img->path, i, oid);
  snprintf (what, sizeof what, "the superblock of volume %d", i);
  if (r != 1 || read_object (c, paddr, TYPE_FS, what) == -1)
    return;
  if (memcmp (b + APSB_MAGIC_AT, "APSB", 4) != 0 ||
      load_le64 (b + O_OID_AT) != oid)
    warnf ("%s: APFS block %" PRIu64 " (%s) is not that volume's "
           "superblock: its name is not read", c->img->path, paddr, what);
  else if (memchr (b + VOLNAME_AT, '\0', VOLNAME_BYTES) == NULL)
    warnf ("%s: APFS volume %d: its name does not end within its 256 "
           "bytes: not read", c->img->path, i);
  else {
    const char *name = (const char *) b + VOLNAME_AT;

    /* Shown on terminals: no control characters. */
    for (const char *p = name; *p; ++p)
      if ((unsigned char) *p < 0x20 || *p == 0x7f) {
        warnf ("%s: APFS volume %d: its name holds control characters: "
               "not shown", c->img->path, i);
        return;
      }
    v->name = xstrdup (name);
    v->role = load_le16 (b + ROLE_AT);
  }
}

/* The names of the volumes in fs->volumes, when the container's object
 * map can be read.
 */
static void
read_names (struct image *img, uint64_t start, uint64_t size,
            const uint8_t *sb, struct filesystem *fs)
{
  uint32_t bs = load_le32 (sb + BLOCK_SIZE_AT);
  struct container c = {
    .img = img, .start = start, .block_size = bs,
    .xid = load_le64 (sb + NEXT_XID_AT) - 1,
  };
  uint64_t omap_root;

  if (bs < MIN_BLOCK || bs > MAX_BLOCK || (bs & (bs - 1)) != 0) {
    warnf ("%s: APFS container: its block size %" PRIu32 " is not a power "
           "of two from 4096 to 65536: volume names not read",
           img->path, bs);
    return;
  }
  c.blocks = size / bs;
  c.block = malloc (bs);
  if (c.block == NULL) {
    errorf ("%m");
    return;
  }
  /* Block 0 again, whole, for its checksum. */
  if (c.blocks == 0 || image_pread (img, c.block, bs, start) == -1)
    ;
  else if (load_le64 (c.block + O_CKSUM_AT) !=
           fletcher64 (c.block + 8, bs - 8))
    warnf ("%s: APFS block 0 (the container superblock) has a wrong "
           "checksum: volume names not read", img->path);
  else if (read_object (&c, load_le64 (sb + OMAP_OID_AT), TYPE_OMAP,
                        "the container's object map") == 0) {
    omap_root = load_le64 (c.block + OM_TREE_OID_AT);
    for (int i = 0; i < APFS_MAX_VOLUMES; ++i)
      if (fs->volumes[i].used)
        read_volume (&c, omap_root, i,
                     load_le64 (sb + FS_OIDS_AT + i * 8), &fs->volumes[i]);
  }
  free (c.block);
}

void
apfs_volumes (struct image *img, uint64_t start, uint64_t size,
              struct filesystem *fs)
{
  uint8_t sb[SB_BYTES];
  uint32_t max;

  fs->n_volumes = -1;
  if (size < SB_BYTES || image_pread (img, sb, SB_BYTES, start) == -1 ||
      memcmp (sb + MAGIC_AT, "NXSB", 4) != 0)
    return;
  /* The slots past the container's own maximum are not its volumes,
   * whatever they hold.
   */
  fs->n_volumes = 0;
  max = load_le32 (sb + MAX_FS_AT);
  for (uint32_t i = 0; i < APFS_MAX_VOLUMES && i < max; ++i)
    if (load_le64 (sb + FS_OIDS_AT + i * 8) != 0) {
      fs->volumes[i].used = true;
      fs->n_volumes++;
    }
  if (fs->n_volumes > 0)
    read_names (img, start, size, sb, fs);
}

const char *
apfs_role_name (uint16_t role, char buf[APFS_ROLE_LEN])
{
  /* The first roles are single bits; the later ones numbers from 1,
   * shifted left by 6 (APFS_VOLUME_ENUM_SHIFT).
   */
  static const struct {
    uint16_t role;
    const char *name;
  } roles[] = {
    { 0x0001, "system" }, { 0x0002, "user" }, { 0x0004, "recovery" },
    { 0x0008, "vm" }, { 0x0010, "preboot" }, { 0x0020, "installer" },
    { 1 << 6, "data" }, { 2 << 6, "baseband" }, { 3 << 6, "update" },
    { 4 << 6, "xart" }, { 5 << 6, "hardware" }, { 6 << 6, "backup" },
    { 7 << 6, "sidecar" }, { 9 << 6, "enterprise" }, { 11 << 6, "prelogin" },
  };

  if (role == 0)
    return NULL;
  for (size_t i = 0; i < sizeof roles / sizeof roles[0]; ++i)
    if (roles[i].role == role)
      return roles[i].name;
  snprintf (buf, APFS_ROLE_LEN, "0x%x", (unsigned) role);
  return buf;
}

char *
apfs_format_volumes (const struct filesystem *fs)
{
  char *s = xstrdup ("");

  for (int i = 0; i < APFS_MAX_VOLUMES; ++i)
    if (fs->volumes[i].used) {
      const char *name = fs->volumes[i].name;
      char *t = xasprintf ("%s%s%d%s%s%s", s, *s ? ", " : "", i,
                           name ? " \"" : "", name ? name : "",
                           name ? "\"" : "");

      free (s);
      s = t;
    }
  return s;
}

int
apfs_find_volume (const struct filesystem *fs, const char *name)
{
  for (int i = 0; i < APFS_MAX_VOLUMES; ++i)
    if (fs->volumes[i].name && strcmp (fs->volumes[i].name, name) == 0)
      return i;
  return -1;
}
