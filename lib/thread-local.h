/* SPDX-License-Identifier: BSD-3-Clause */
/* Objects owned by one thread (decompressor contexts, scratch buffers),
 * created on first use and freed when the thread exits, so hot paths
 * need neither a lock nor an allocation per call.
 */

#ifndef QEMOUNT_THREAD_LOCAL_H
#define QEMOUNT_THREAD_LOCAL_H

#include <stdbool.h>
#include <stddef.h>
#include <pthread.h>

struct thread_local {
  size_t size;                  /* of the object, zeroed on creation */
  void (*free_fields) (void *); /* frees what the object points to */
  /* Private. */
  pthread_key_t key;
  bool ready;
  struct thread_local *next;
};

#define THREAD_LOCAL_INIT(type, free_fields_fn) \
  { .size = sizeof (type), .free_fields = (free_fields_fn) }

/* This thread's object, or NULL with errno set (out of memory, or no
 * thread keys left).
 */
void *thread_local_get (struct thread_local *tl);

/* This thread's scratch buffer, grown to at least size bytes (contents
 * undefined), or NULL with errno set.  For loads of compressed bytes: a
 * fresh allocation per block would be mmap'd and page-faulted for big
 * blocks.  Only leaf code may use it: nothing that holds it may call
 * code that uses it too.
 */
void *thread_scratch (size_t size);

#endif /* QEMOUNT_THREAD_LOCAL_H */
