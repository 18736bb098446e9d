/* SPDX-License-Identifier: BSD-3-Clause */
/* UDIF's XML property list: resource-fork -> blkx -> an array of dicts
 * whose Data is a base64 "mish" table, one per partition of the disk.
 *
 *   mish table: 0 "mish", 4 version (1), 8 first sector, 16 sector
 *   count, 24 data offset (added to the chunks' offsets), 32..199
 *   reserved and a checksum, 200 number of chunks, 204 the chunks.
 *   chunk (40 bytes): 0 type, 4 comment, 8 first sector within the
 *   partition, 16 sector count, 24 offset in the data fork, 32 stored
 *   length.
 */

#include <config.h>

#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include <libxml/parser.h>
#include <libxml/tree.h>

#include "bytes.h"
#include "dmg.h"
#include "image.h"

/* No network, no entity expansion (the default), errors to us only.
 * Without XML_PARSE_HUGE libxml2 refuses text nodes above 10 MB, a
 * partition of about 250,000 chunks.
 */
#define PARSE_OPTIONS (XML_PARSE_NONET | XML_PARSE_NOERROR | XML_PARSE_NOWARNING)

#define MISH_HEADER   204
#define MISH_CHUNK    40
#define MAX_SECTORS   (INT64_MAX / 512)

#define PLIST_ERROR(...) (image_error (__VA_ARGS__), errno = EINVAL, -1)

/* The first element node at or after n, or NULL. */
static xmlNode *
element (xmlNode *n)
{
  while (n != NULL && n->type != XML_ELEMENT_NODE)
    n = n->next;
  return n;
}

static bool
named (const xmlNode *n, const char *name)
{
  return n != NULL && xmlStrEqual (n->name, BAD_CAST name);
}

/* The value element of key in a <dict>, or NULL. */
static xmlNode *
dict_get (xmlNode *dict, const char *key)
{
  if (!named (dict, "dict"))
    return NULL;
  for (xmlNode *n = element (dict->children); n; n = element (n->next)) {
    if (named (n, "key")) {
      xmlChar *text = xmlNodeGetContent (n);
      bool match = text && xmlStrEqual (text, BAD_CAST key);

      xmlFree (text);
      if (match)
        return element (n->next);
    }
  }
  return NULL;
}

static int
base64_value (unsigned char c)
{
  if (c >= 'A' && c <= 'Z') return c - 'A';
  if (c >= 'a' && c <= 'z') return c - 'a' + 26;
  if (c >= '0' && c <= '9') return c - '0' + 52;
  if (c == '+') return 62;
  if (c == '/') return 63;
  return -1;
}

/* Decode base64 text (whitespace anywhere, '=' padding at the end) into
 * out, which has room for strlen(text) * 3 / 4 bytes.  False if it is
 * not base64.
 */
static bool
base64_decode (const char *text, uint8_t *out, size_t *out_len)
{
  uint32_t acc = 0;
  unsigned bits = 0, pad = 0;
  size_t o = 0;

  for (const unsigned char *p = (const unsigned char *) text; *p; ++p) {
    int v;

    if (*p == ' ' || *p == '\t' || *p == '\r' || *p == '\n')
      continue;
    if (*p == '=') {
      pad++;
      continue;
    }
    v = base64_value (*p);
    if (v < 0 || pad > 0)
      return false;
    acc = acc << 6 | v;
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out[o++] = acc >> bits;
      acc &= (1u << bits) - 1;
    }
  }
  if (pad > 2)
    return false;
  *out_len = o;
  return true;
}

struct chunk_list {
  struct chunk *v;
  size_t n, cap;
};

static int
append (struct image *img, struct chunk_list *l, const struct chunk *c)
{
  if (l->n == l->cap) {
    size_t cap = l->cap ? l->cap * 2 : 64;
    struct chunk *v = realloc (l->v, cap * sizeof *v);

    if (v == NULL) {
      image_error ("%s: %m", img->path);
      return -1;
    }
    l->v = v;
    l->cap = cap;
  }
  l->v[l->n++] = *c;
  return 0;
}

/* One partition's mish table (len bytes). */
static int
parse_mish (struct image *img, uint32_t partition, const uint8_t *m,
            size_t len, struct chunk_list *l)
{
  uint64_t first, sectors, data_offset;
  uint32_t n;

  if (len < MISH_HEADER || memcmp (m, "mish", 4) != 0)
    return PLIST_ERROR ("%s: blkx partition %" PRIu32 " has no mish table",
                        img->path, partition);
  if (load_be32 (&m[4]) != 1)
    return PLIST_ERROR ("%s: blkx partition %" PRIu32 ": mish table version "
                        "%" PRIu32 " is not supported", img->path, partition,
                        load_be32 (&m[4]));
  first = load_be64 (&m[8]);
  sectors = load_be64 (&m[16]);
  data_offset = load_be64 (&m[24]);
  n = load_be32 (&m[200]);
  if (first > MAX_SECTORS || sectors > MAX_SECTORS - first)
    return PLIST_ERROR ("%s: blkx partition %" PRIu32 " (sector %" PRIu64
                        ", %" PRIu64 " sectors) is beyond any disk size",
                        img->path, partition, first, sectors);
  if (n > (len - MISH_HEADER) / MISH_CHUNK)
    return PLIST_ERROR ("%s: blkx partition %" PRIu32 " lists %" PRIu32
                        " chunks but its mish table holds %zu", img->path,
                        partition, n, (len - MISH_HEADER) / MISH_CHUNK);

  for (uint32_t i = 0; i < n; ++i) {
    const uint8_t *e = &m[MISH_HEADER + (size_t) i * MISH_CHUNK];
    struct chunk c = {
      .type = load_be32 (&e[0]),
      .sector = load_be64 (&e[8]),
      .sectors = load_be64 (&e[16]),
      .offset = load_be64 (&e[24]),
      .length = load_be64 (&e[32]),
      .partition = partition,
      .entry = i,
    };

    if (c.type == DMG_END)
      break;
    if (c.type == DMG_COMMENT || c.sectors == 0)
      continue;
    if (c.sector > sectors || c.sectors > sectors - c.sector)
      return PLIST_ERROR ("%s: chunk %" PRIu32 " of partition %" PRIu32
                          " (sector %" PRIu64 ", %" PRIu64 " sectors) is "
                          "outside its partition of %" PRIu64 " sectors",
                          img->path, i, partition, c.sector, c.sectors,
                          sectors);
    if (c.offset > UINT64_MAX - data_offset)
      return PLIST_ERROR ("%s: chunk %" PRIu32 " of partition %" PRIu32
                          " has an offset that overflows", img->path, i,
                          partition);
    c.sector += first;
    c.offset += data_offset;
    if (append (img, l, &c) == -1)
      return -1;
  }
  return 0;
}

/* Every blkx partition of the parsed plist. */
static int
read_blkx (struct image *img, xmlDoc *doc, struct chunk_list *l)
{
  xmlNode *root = element (xmlDocGetRootElement (doc));
  xmlNode *blkx, *top;
  uint32_t partition = 0;

  top = named (root, "plist") ? element (root->children) : NULL;
  blkx = dict_get (dict_get (top, "resource-fork"), "blkx");
  if (!named (blkx, "array"))
    return PLIST_ERROR ("%s: the XML property list has no resource-fork/blkx "
                        "array", img->path);

  for (xmlNode *p = element (blkx->children); p;
       p = element (p->next), partition++) {
    xmlNode *data = dict_get (p, "Data");
    xmlChar *text;
    uint8_t *mish;
    size_t len;
    int r;

    if (!named (data, "data"))
      return PLIST_ERROR ("%s: blkx partition %" PRIu32 " has no Data",
                          img->path, partition);
    text = xmlNodeGetContent (data);
    if (text == NULL) {
      image_error ("%s: %m", img->path);
      return -1;
    }
    mish = malloc (strlen ((char *) text) / 4 * 3 + 3);
    if (mish == NULL) {
      xmlFree (text);
      image_error ("%s: %m", img->path);
      return -1;
    }
    if (!base64_decode ((char *) text, mish, &len))
      r = PLIST_ERROR ("%s: blkx partition %" PRIu32 ": Data is not base64",
                       img->path, partition);
    else
      r = parse_mish (img, partition, mish, len, l);
    free (mish);
    xmlFree (text);
    if (r == -1)
      return -1;
  }
  if (partition == 0)
    return PLIST_ERROR ("%s: the blkx array is empty", img->path);
  return 0;
}

int
dmg_read_plist (struct image *img, uint64_t offset, uint64_t length,
                struct chunk **chunks, size_t *n_chunks)
{
  struct chunk_list l = { 0 };
  char *xml = malloc (length);
  xmlDoc *doc;
  int r;

  if (xml == NULL) {
    image_error ("%s: %m", img->path);
    return -1;
  }
  if (image_read_file (img, xml, length, offset, "XML property list") == -1) {
    free (xml);
    return -1;
  }
  xmlInitParser ();
  doc = xmlReadMemory (xml, length, img->path, NULL, PARSE_OPTIONS);
  free (xml);
  if (doc == NULL) {
    const xmlError *e = xmlGetLastError ();
    const char *why = e && e->message ? e->message : "parse error";

    /* libxml2 ends its messages with a newline. */
    return PLIST_ERROR ("%s: invalid XML property list: %.*s", img->path,
                        (int) strcspn (why, "\n"), why);
  }
  r = read_blkx (img, doc, &l);
  xmlFreeDoc (doc);
  if (r == -1) {
    free (l.v);
    return -1;
  }
  *chunks = l.v;
  *n_chunks = l.n;
  return 0;
}
