/* SPDX-License-Identifier: BSD-3-Clause */
/* ploop DiskDescriptor.xml: a snapshot chain of ploop deltas.
 *
 * StorageData/Storage/Image lists the deltas (GUID, Type, File) and
 * Snapshots lists Shot GUID -> ParentGUID with TopGUID the newest.  The
 * top delta wins; its holes fall through to its parent, down to the base,
 * which may also be a raw ("Plain") file.  We resolve the chain into a
 * list of images, each the backing of the one above it.
 */

#include <config.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <libxml/parser.h>
#include <libxml/tree.h>
#include <libxml/xmlreader.h>

#include "image.h"
#include "source.h"
#include "ploop.h"

#define DESCRIPTOR_MAX_SIZE (1u << 20)
#define PARSE_OPTIONS (XML_PARSE_NONET | XML_PARSE_NOERROR | XML_PARSE_NOWARNING)
#define NULL_GUID "{00000000-0000-0000-0000-000000000000}"

struct delta {
  const xmlChar *guid, *file, *type;
};

struct shot {
  const xmlChar *guid, *parent;
};

struct descriptor {
  const char *path;
  const struct source *src;     /* deltas are named relative to it */
  struct delta deltas[MAX_CHAIN_DEPTH];
  size_t n_deltas;
  struct shot shots[MAX_CHAIN_DEPTH];
  size_t n_shots;
  const xmlChar *top;
};

/* libxml2 reports its runtime version as e.g. "20914"; show 2.9.14. */
const char *
ploop_descriptor_xml_version (void)
{
  static char version[32];
  long v = strtol (xmlParserVersion, NULL, 10);

  snprintf (version, sizeof version, "%ld.%ld.%ld",
            v / 10000, v / 100 % 100, v % 100);
  return version;
}

/* A DiskDescriptor.xml is recognised by what it is, the same way when
 * probing and when the format is forced: after an optional UTF-8 byte
 * order mark and whitespace the file starts with '<', it is a regular
 * file of at most DESCRIPTOR_MAX_SIZE bytes, and its root element, as
 * libxml2 parses it, is Parallels_disk_image.  An XML declaration,
 * comments or a DOCTYPE may come first, of any length.  The first test
 * is cheap and needs only the bytes probing read, so that no other file
 * is read further; the size bounds what the rest reads.
 */
bool
ploop_descriptor_starts_like (const uint8_t *buf, size_t len)
{
  size_t i = 0;

  if (len >= 3 && memcmp (buf, "\xef\xbb\xbf", 3) == 0)
    i = 3;
  while (i < len && (buf[i] == ' ' || buf[i] == '\t' || buf[i] == '\r' ||
                     buf[i] == '\n'))
    i++;
  return i < len && buf[i] == '<';
}

static void
invalid_xml (const char *path)
{
  const xmlError *e = xmlGetLastError ();
  const char *why = e && e->message ? e->message : "parse error";

  /* libxml2 ends its messages with a newline. */
  image_error ("%s: invalid XML: %.*s", path, (int) strcspn (why, "\n"), why);
}

/* The rest of the rule above: the file's text if it is a descriptor,
 * else NULL.  path is NULL when probing, where a file that is not a
 * descriptor is simply in another format; otherwise the format is ploop
 * and we say why the file is not one.  Only the prologue up to the root
 * element's start tag is parsed here, so that a descriptor damaged
 * further on is refused as one rather than served as a raw disk.
 */
static char *
read_descriptor (const char *path, struct source *src, size_t *size)
{
  xmlTextReader *reader = NULL;
  const xmlChar *root;
  struct stat st;
  char *xml = NULL;
  int r;

  /* (A block device holding one is not.) */
  if (src->fd >= 0 && (fstat (src->fd, &st) == -1 || !S_ISREG (st.st_mode))) {
    if (path)
      image_error ("%s: a DiskDescriptor.xml must be a regular file", path);
    return NULL;
  }
  if (src->size > DESCRIPTOR_MAX_SIZE) {
    if (path)
      image_error ("%s: descriptor is larger than %u bytes", path,
                   DESCRIPTOR_MAX_SIZE);
    return NULL;
  }
  *size = src->size;
  xml = malloc (*size + 1);
  if (xml == NULL) {
    if (path)
      image_error ("%s: %m", path);
    return NULL;
  }
  if (source_read (src, xml, *size, 0, NULL) == -1) {
    if (path)
      image_error ("%s: reading the descriptor failed", path);
    goto not_descriptor;
  }

  /* No network, no entity expansion, no DTD loading: the descriptor is
   * untrusted input.
   */
  xmlInitParser ();
  reader = xmlReaderForMemory (xml, *size, path, NULL, PARSE_OPTIONS);
  if (reader == NULL) {
    if (path)
      image_error ("%s: cannot set up the XML parser", path);
    goto not_descriptor;
  }
  while ((r = xmlTextReaderRead (reader)) == 1 &&
         xmlTextReaderNodeType (reader) != XML_READER_TYPE_ELEMENT)
    ;
  if (r == 0) {
    if (path)
      image_error ("%s: invalid XML: no root element", path);
    goto not_descriptor;
  }
  if (r == -1) {
    if (path)
      invalid_xml (path);
    goto not_descriptor;
  }
  root = xmlTextReaderConstLocalName (reader);
  if (!xmlStrEqual (root, BAD_CAST "Parallels_disk_image")) {
    if (path)
      image_error ("%s: not a ploop DiskDescriptor.xml (root element is "
                   "<%s>, not Parallels_disk_image)", path,
                   root ? (const char *) root : "");
    goto not_descriptor;
  }
  xmlFreeTextReader (reader);
  return xml;

 not_descriptor:
  xmlFreeTextReader (reader);
  free (xml);
  return NULL;
}

bool
ploop_descriptor_probe (struct source *src, const uint8_t *buf, size_t len)
{
  size_t size;
  char *xml;
  bool is;

  if (!ploop_descriptor_starts_like (buf, len))
    return false;
  xml = read_descriptor (NULL, src, &size);
  is = xml != NULL;
  free (xml);
  return is;
}

static xmlNode *
child (const xmlNode *parent, const char *name)
{
  for (xmlNode *n = parent ? parent->children : NULL; n; n = n->next)
    if (n->type == XML_ELEMENT_NODE &&
        xmlStrcmp (n->name, BAD_CAST name) == 0)
      return n;
  return NULL;
}

/* Text of the child element called name, or NULL; owned by the document
 * (we only read the first text node, which is all these fields have).
 */
static const xmlChar *
child_text (const xmlNode *parent, const char *name)
{
  xmlNode *n = child (parent, name);

  if (n == NULL || n->children == NULL || n->children->type != XML_TEXT_NODE)
    return NULL;
  return n->children->content;
}

static int
collect (struct descriptor *d, const xmlNode *root)
{
  const xmlNode *storage_data = child (root, "StorageData");
  const xmlNode *snapshots = child (root, "Snapshots");
  const xmlNode *storage = child (storage_data, "Storage");

  if (storage == NULL) {
    image_error ("%s: no StorageData/Storage element", d->path);
    return -1;
  }
  for (const xmlNode *n = storage->next; n; n = n->next)
    if (n->type == XML_ELEMENT_NODE &&
        xmlStrcmp (n->name, BAD_CAST "Storage") == 0) {
      image_error ("%s: more than one Storage element (split images are "
                   "not supported)", d->path);
      return -1;
    }

  for (const xmlNode *n = storage->children; n; n = n->next) {
    struct delta *delta;

    if (n->type != XML_ELEMENT_NODE ||
        xmlStrcmp (n->name, BAD_CAST "Image") != 0)
      continue;
    if (d->n_deltas == MAX_CHAIN_DEPTH) {
      image_error ("%s: more than %d images", d->path, MAX_CHAIN_DEPTH);
      return -1;
    }
    delta = &d->deltas[d->n_deltas++];
    delta->guid = child_text (n, "GUID");
    delta->file = child_text (n, "File");
    delta->type = child_text (n, "Type");
    if (delta->guid == NULL || delta->file == NULL) {
      image_error ("%s: an Image element lacks its GUID or File", d->path);
      return -1;
    }
  }
  if (d->n_deltas == 0) {
    image_error ("%s: no Image element", d->path);
    return -1;
  }

  for (const xmlNode *n = snapshots ? snapshots->children : NULL; n;
       n = n->next) {
    struct shot *shot;

    if (n->type != XML_ELEMENT_NODE ||
        xmlStrcmp (n->name, BAD_CAST "Shot") != 0)
      continue;
    if (d->n_shots == MAX_CHAIN_DEPTH) {
      image_error ("%s: more than %d snapshots", d->path, MAX_CHAIN_DEPTH);
      return -1;
    }
    shot = &d->shots[d->n_shots++];
    shot->guid = child_text (n, "GUID");
    shot->parent = child_text (n, "ParentGUID");
    if (shot->guid == NULL) {
      image_error ("%s: a Shot element lacks its GUID", d->path);
      return -1;
    }
  }

  d->top = child_text (snapshots, "TopGUID");
  if (d->top == NULL) {
    if (d->n_deltas > 1) {
      image_error ("%s: several images but no Snapshots/TopGUID", d->path);
      return -1;
    }
    d->top = d->deltas[0].guid;
  }
  return 0;
}

static const struct delta *
find_delta (const struct descriptor *d, const xmlChar *guid)
{
  for (size_t i = 0; i < d->n_deltas; ++i)
    if (xmlStrcmp (d->deltas[i].guid, guid) == 0)
      return &d->deltas[i];
  return NULL;
}

static const xmlChar *
parent_of (const struct descriptor *d, const xmlChar *guid)
{
  for (size_t i = 0; i < d->n_shots; ++i)
    if (xmlStrcmp (d->shots[i].guid, guid) == 0)
      return d->shots[i].parent;
  return NULL;
}

/* Fill chain[] from the top delta down to the base; returns its length.
 * A chain longer than the number of images must revisit one: a loop.
 */
static ssize_t
resolve_chain (const struct descriptor *d, const struct delta **chain)
{
  const xmlChar *guid = d->top;
  size_t n = 0;

  while (guid != NULL && xmlStrcmp (guid, BAD_CAST NULL_GUID) != 0) {
    const struct delta *delta = find_delta (d, guid);

    if (delta == NULL) {
      image_error ("%s: snapshot %s has no Image with that GUID",
                   d->path, (const char *) guid);
      return -1;
    }
    for (size_t i = 0; i < n; ++i)
      if (chain[i] == delta) {
        image_error ("%s: snapshot chain loops at %s", d->path,
                     (const char *) guid);
        return -1;
      }
    chain[n++] = delta;
    guid = parent_of (d, guid);
  }
  if (n == 0) {
    image_error ("%s: TopGUID names no image", d->path);
    return -1;
  }
  return n;
}

/* Open the deltas top first (so that loop checks see the files above),
 * each one the backing of the previous.
 */
static struct image *
open_chain (const struct descriptor *d, const struct delta **chain,
            size_t n, const struct image_options *opts, unsigned depth)
{
  struct image *top = NULL, *above = NULL;

  if (opts->backing == BACKING_NO && n > 1) {
    image_warning ("%s: backing=no: serving only the top delta %s, its "
                   "holes read as zeros", d->path,
                   (const char *) chain[0]->file);
    n = 1;
  }
  for (size_t i = 0; i < n; ++i) {
    bool plain = chain[i]->type &&
      xmlStrcmp (chain[i]->type, BAD_CAST "Plain") == 0;
    struct image *img;

    img = image_open_relative (d->src, (const char *) chain[i]->file,
                               plain ? "raw" : "ploop", opts,
                               depth + 1 + i);
    if (img == NULL) {
      image_close (top);
      return NULL;
    }
    if (above)
      above->backing = img;
    else
      top = img;
    above = img;
  }
  return top;
}

struct image *
ploop_descriptor_open (const char *path, struct source *src,
                       const struct image_options *opts, unsigned depth)
{
  struct descriptor d = { .path = path, .src = src };
  const struct delta *chain[MAX_CHAIN_DEPTH];
  struct image *top = NULL;
  xmlDoc *doc = NULL;
  char *xml = NULL;
  size_t size;
  ssize_t n;

  if (depth > 0) {
    image_error ("%s: a DiskDescriptor.xml cannot be a backing file", path);
    goto out;
  }
  xml = read_descriptor (path, src, &size);
  if (xml == NULL)
    goto out;
  doc = xmlReadMemory (xml, size, path, NULL, PARSE_OPTIONS);
  if (doc == NULL) {
    invalid_xml (path);
    goto out;
  }
  /* read_descriptor saw that this root is Parallels_disk_image. */
  if (collect (&d, xmlDocGetRootElement (doc)) == -1)
    goto out;
  n = resolve_chain (&d, chain);
  if (n == -1)
    goto out;
  top = open_chain (&d, chain, n, opts, depth);

 out:
  if (top == NULL && errno == 0)
    errno = EINVAL;
  xmlFreeDoc (doc);
  free (xml);
  source_close (src);
  return top;
}
