/* SPDX-License-Identifier: BSD-3-Clause */
/* A finished local file sent to S3 as one object, by multipart upload:
 * the object appears (with CompleteMultipartUpload) only once every
 * part is in; on any failure, or when cancelled, the upload is aborted
 * and nothing appears.  Keys and endpoint as for reads (lib/source-s3.c).
 */

#ifndef QEMOUNT_S3_UPLOAD_H
#define QEMOUNT_S3_UPLOAD_H

#include <signal.h>
#include <stdbool.h>
#include <stdint.h>

struct s3_upload;

/* Start a multipart upload to location, s3://BUCKET/KEY: the keys and
 * the URL are checked (and the key found to be good) before the file
 * to send is made.  NULL after image_error naming location.
 */
struct s3_upload *s3_upload_start (const char *location);

/* Send the size bytes of fd (read with pread) and complete the upload:
 * the object appears, replacing any there.  cancel (may be NULL) set
 * stops it with EINTR.  0, or -1 after image_error naming location.
 */
int s3_upload_send (struct s3_upload *u, int fd, uint64_t size,
                    const volatile sig_atomic_t *cancel);

/* Free u; an upload not completed is aborted first (its parts dropped,
 * no object appears).  errno is kept.
 */
void s3_upload_free (struct s3_upload *u);

#endif /* QEMOUNT_S3_UPLOAD_H */
