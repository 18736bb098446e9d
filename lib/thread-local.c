/* SPDX-License-Identifier: BSD-3-Clause */
/* Per-thread objects behind pthread keys; see thread-local.h. */

#include <config.h>

#include <errno.h>
#include <stddef.h>
#include <stdlib.h>

#include "thread-local.h"

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static struct thread_local *all;   /* every key created, for unload */

/* pthread key destructors get only the object, so each object starts
 * with a pointer back to its thread_local to find its free_fields.
 */
struct header {
  struct thread_local *tl;
  _Alignas (max_align_t) char object[];
};

static void
free_object (void *p)
{
  struct header *h = p;

  if (h->tl->free_fields)
    h->tl->free_fields (h->object);
  free (h);
}

static int
create_key (struct thread_local *tl)
{
  int r = 0;

  pthread_mutex_lock (&lock);
  if (!tl->ready) {
    r = pthread_key_create (&tl->key, free_object);
    if (r == 0) {
      tl->next = all;
      all = tl;
      __atomic_store_n (&tl->ready, true, __ATOMIC_RELEASE);
    }
  }
  pthread_mutex_unlock (&lock);
  return r;
}

void *
thread_local_get (struct thread_local *tl)
{
  struct header *h;
  int r;

  if (!__atomic_load_n (&tl->ready, __ATOMIC_ACQUIRE) &&
      (r = create_key (tl)) != 0) {
    errno = r;
    return NULL;
  }
  h = pthread_getspecific (tl->key);
  if (h != NULL)
    return h->object;

  h = calloc (1, sizeof *h + tl->size);
  if (h == NULL)
    return NULL;
  h->tl = tl;
  r = pthread_setspecific (tl->key, h);
  if (r != 0) {
    free (h);
    errno = r;
    return NULL;
  }
  return h->object;
}

struct scratch {
  char *buf;
  size_t size;
};

static void
free_scratch (void *p)
{
  free (((struct scratch *) p)->buf);
}

static struct thread_local scratch_buffers =
  THREAD_LOCAL_INIT (struct scratch, free_scratch);

void *
thread_scratch (size_t size)
{
  struct scratch *s = thread_local_get (&scratch_buffers);

  if (s == NULL)
    return NULL;
  if (s->size < size) {
    free (s->buf);
    s->buf = malloc (size);
    s->size = s->buf ? size : 0;
  }
  return s->buf;
}

/* The plugin may be unloaded while threads that used it live on:
 * deleting the keys makes sure those threads never call free_object,
 * which would no longer be mapped.  Their objects are leaked instead.
 */
static void __attribute__ ((destructor))
delete_keys (void)
{
  for (struct thread_local *tl = all; tl != NULL; tl = tl->next) {
    pthread_key_delete (tl->key);
    tl->ready = false;
  }
  all = NULL;
}
