/* SPDX-License-Identifier: BSD-3-Clause */
/* qemount-sftp-relay: sits between the host's sshfs (on stdin/stdout,
 * in the guest the virtio port) and sftp-server, and answers the read
 * requests of files opened read-only itself, moving page-cache pages to
 * the port with splice(2) instead of sftp-server's read, buffer copy
 * and write.  Under TCG every byte the guest copies costs emulated CPU;
 * this is what limits sequential reads through a VM mount.  All other
 * requests go to sftp-server unchanged.
 *
 * Coherence: sftp-server works through requests in order, and a read
 * answered here must not overtake a change still on its way there.  So
 * a read is only answered here while no request that may change files
 * (write, setstat, remove, rename, an open for writing...) is waiting
 * for its answer from sftp-server; otherwise it is forwarded too.
 *
 * usage: qemount-sftp-relay SFTP-SERVER [ARGS...]
 * At the end it prints how many reads it answered and forwarded.
 */

#include <config.h>

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <poll.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#define PROG "qemount-sftp-relay"

/* SFTP version 3 (draft-ietf-secsh-filexfer-02), what sshfs speaks. */
enum {
  FXP_INIT = 1, FXP_VERSION = 2, FXP_OPEN = 3, FXP_CLOSE = 4, FXP_READ = 5,
  FXP_LSTAT = 7, FXP_FSTAT = 8, FXP_OPENDIR = 11, FXP_READDIR = 12,
  FXP_REALPATH = 16, FXP_STAT = 17, FXP_READLINK = 19,
  FXP_STATUS = 101, FXP_HANDLE = 102, FXP_DATA = 103,
};
enum { FX_EOF = 1, FX_FAILURE = 4 };
#define FXF_READ 1

/* sftp-server's own bound on a packet; a larger length is garbage. */
#define MAX_PACKET (256 * 1024)
/* The most one read answers (sftp-server answers no more either). */
#define MAX_READ (MAX_PACKET - 1024)
/* How long the host may take to connect to the port. */
#define HOST_WAIT_MS 60000
/* Stop taking requests while this much waits to go to sftp-server. */
#define SERVER_BACKLOG (4 * MAX_PACKET)

struct buffer {
  unsigned char *data;
  size_t start, end, size;
};

/* A file this relay reads itself: sftp-server's handle for it. */
struct tracked {
  char handle[256];
  size_t handle_len;
  int fd;
};

/* An open request on its way: the descriptor opened for it. */
struct pending_open {
  uint32_t id;
  int fd;
};

static struct tracked *files;
static size_t nr_files;
static struct pending_open *opens;
static size_t nr_opens;
/* Ids of requests that may change files, until their answer is back. */
static uint32_t *changes;
static size_t nr_changes;
static uint64_t answered, forwarded;
/* Pipes that carry a read's data, and the answer with its header. */
static int data_pipe[2], answer_pipe[2];
/* Reads are answered here only if the pipes hold a whole answer. */
static bool pipes_fit;
static bool splice_out_works = true;

static void
die (const char *msg)
{
  fprintf (stderr, PROG ": %s: %s\n", msg, strerror (errno));
  exit (EXIT_FAILURE);
}

/* Once the host has gone (sshfs unmounted while sftp-server still had
 * answers on the way), answers are dropped; sftp-server is let finish.
 */
static bool host_gone;

static bool
is_hangup (int err)
{
  return err == EPIPE || err == ECONNRESET;
}

static void *
grow (void *p, size_t count, size_t elem)
{
  p = realloc (p, (count + 1) * elem);
  if (p == NULL)
    die ("realloc");
  return p;
}

static uint32_t
get_u32 (const unsigned char *p)
{
  return (uint32_t) p[0] << 24 | p[1] << 16 | p[2] << 8 | p[3];
}

static void
put_u32 (unsigned char *p, uint32_t v)
{
  p[0] = v >> 24; p[1] = v >> 16; p[2] = v >> 8; p[3] = v;
}

/* Reads a string at *pos of a packet body; false if it does not fit. */
static bool
get_string (const unsigned char *body, size_t len, size_t *pos,
            const unsigned char **s, uint32_t *slen)
{
  if (len - *pos < 4)
    return false;
  *slen = get_u32 (body + *pos);
  if (len - *pos - 4 < *slen)
    return false;
  *s = body + *pos + 4;
  *pos += 4 + *slen;
  return true;
}

/* Room for n more bytes at b->end. */
static void
buffer_reserve (struct buffer *b, size_t n)
{
  if (b->end + n <= b->size)
    return;
  memmove (b->data, b->data + b->start, b->end - b->start);
  b->end -= b->start;
  b->start = 0;
  if (b->end + n > b->size) {
    b->size = b->end + n > 2 * b->size ? b->end + n : 2 * b->size;
    b->data = realloc (b->data, b->size);
    if (b->data == NULL)
      die ("realloc");
  }
}

static void
buffer_append (struct buffer *b, const void *p, size_t n)
{
  buffer_reserve (b, n);
  memcpy (b->data + b->end, p, n);
  b->end += n;
}

/* Reads what fd has into b; false at the end of the stream. */
static bool
buffer_fill (struct buffer *b, int fd)
{
  ssize_t n;

  buffer_reserve (b, 65536);
  n = read (fd, b->data + b->end, b->size - b->end);
  if (n == -1 && (errno == EINTR || errno == EAGAIN))
    return true;
  if (n == -1 && is_hangup (errno))
    return false;
  if (n == -1)
    die ("read");
  if (n == 0)
    return false;
  b->end += n;
  return true;
}

/* The next whole packet in b (length, type, body), or NULL. */
static const unsigned char *
next_packet (struct buffer *b, size_t *len)
{
  size_t have = b->end - b->start;
  uint32_t n;

  if (have < 4)
    return NULL;
  n = get_u32 (b->data + b->start);
  if (n == 0 || n > MAX_PACKET) {
    errno = EPROTO;
    die ("packet length out of bounds");
  }
  if (have - 4 < n)
    return NULL;
  *len = 4 + n;
  b->start += 4 + n;
  return b->data + b->start - 4 - n;
}

/* Writes all of p; false if the reader hung up (only the host can). */
static bool
write_all (int fd, const void *p, size_t n, const char *what)
{
  while (n > 0) {
    ssize_t r = write (fd, p, n);

    if (r == -1 && errno == EINTR)
      continue;
    if (r == -1 && is_hangup (errno))
      return false;
    if (r == -1)
      die (what);
    p = (const char *) p + r;
    n -= r;
  }
  return true;
}

/* Writes an answer to the host. */
static void
send_host (const void *p, size_t n)
{
  if (!host_gone && !write_all (STDOUT_FILENO, p, n, "write to the host"))
    host_gone = true;
}

static void
forget_change (uint32_t id)
{
  for (size_t i = 0; i < nr_changes; i++)
    if (changes[i] == id) {
      changes[i] = changes[--nr_changes];
      return;
    }
}

static struct tracked *
find_file (const unsigned char *handle, uint32_t len)
{
  for (size_t i = 0; i < nr_files; i++)
    if (files[i].handle_len == len && memcmp (files[i].handle, handle, len) == 0)
      return &files[i];
  return NULL;
}

static void
send_status (uint32_t id, uint32_t code, const char *msg)
{
  size_t mlen = strlen (msg);
  unsigned char p[64];

  put_u32 (p, 1 + 4 + 4 + 4 + mlen + 4);
  p[4] = FXP_STATUS;
  put_u32 (p + 5, id);
  put_u32 (p + 9, code);
  put_u32 (p + 13, mlen);
  memcpy (p + 17, msg, mlen);
  put_u32 (p + 17 + mlen, 0);             /* language tag */
  send_host (p, 21 + mlen);
}

/* Moves n bytes from the answer pipe to the host. */
static void
send_pipe (size_t n)
{
  while (n > 0 && splice_out_works && !host_gone) {
    ssize_t r = splice (answer_pipe[0], NULL, STDOUT_FILENO, NULL, n,
                        SPLICE_F_MOVE);

    if (r == -1 && errno == EINTR)
      continue;
    if (r == -1 && errno == EINVAL) {
      splice_out_works = false;        /* stdout cannot splice: copy */
      break;
    }
    if (r == -1 && is_hangup (errno)) {
      host_gone = true;                /* the rest is read and dropped */
      break;
    }
    if (r <= 0)
      die ("splice to the host");
    n -= r;
  }
  while (n > 0) {
    char chunk[65536];
    ssize_t r = read (answer_pipe[0], chunk,
                      n < sizeof chunk ? n : sizeof chunk);

    if (r <= 0)
      die ("read from a pipe");
    send_host (chunk, r);
    n -= r;
  }
}

/* Up to len bytes of fd from offset into the data pipe: page-cache
 * pages by reference, or copied where the filesystem cannot splice.
 * Returns the count, short only at the end of the file or an error
 * (what sftp-server's read(2) would give), or -1 with errno.
 */
static ssize_t
fill_data_pipe (int fd, uint64_t offset, size_t len)
{
  size_t got = 0;
  loff_t off = offset;

  while (got < len) {
    ssize_t r = splice (fd, &off, data_pipe[1], NULL, len - got,
                        SPLICE_F_NONBLOCK);

    if (r == -1 && errno == EINTR)
      continue;
    if (r == -1 && errno == EINVAL) {
      char chunk[65536];
      size_t want = len - got < sizeof chunk ? len - got : sizeof chunk;

      r = pread (fd, chunk, want, off);
      if (r > 0) {
        write_all (data_pipe[1], chunk, r, "write to a pipe");
        off += r;
      }
    }
    if (r == -1)
      return got > 0 ? (ssize_t) got : -1;
    if (r == 0)
      break;
    got += r;
  }
  return got;
}

/* A read of a file opened here: the data, or EOF, or the error, as
 * one write to the host (one virtio buffer in the guest): the header
 * goes into the answer pipe, the data pipe's pages after it.
 */
static void
answer_read (uint32_t id, int fd, uint64_t offset, uint32_t len)
{
  unsigned char head[13];
  ssize_t got;

  answered++;
  if (len > MAX_READ)
    len = MAX_READ;
  got = fill_data_pipe (fd, offset, len);
  if (got == -1) {
    send_status (id, FX_FAILURE, strerror (errno));
    return;
  }
  if (got == 0) {
    send_status (id, FX_EOF, "End of file");
    return;
  }
  put_u32 (head, 1 + 4 + 4 + got);
  head[4] = FXP_DATA;
  put_u32 (head + 5, id);
  put_u32 (head + 9, got);
  write_all (answer_pipe[1], head, sizeof head, "write to a pipe");
  for (ssize_t moved = 0; moved < got; ) {
    ssize_t r = splice (data_pipe[0], NULL, answer_pipe[1], NULL,
                        got - moved, SPLICE_F_NONBLOCK);

    if (r == -1 && errno == EINTR)
      continue;
    if (r <= 0)
      die ("splice between pipes");
    moved += r;
  }
  send_pipe (sizeof head + got);
}

/* Is this request one that cannot change any file? */
static bool
only_looks (uint8_t type, const unsigned char *body, size_t len)
{
  switch (type) {
  case FXP_INIT: case FXP_CLOSE: case FXP_READ: case FXP_LSTAT:
  case FXP_FSTAT: case FXP_OPENDIR: case FXP_READDIR: case FXP_REALPATH:
  case FXP_STAT: case FXP_READLINK:
    return true;
  case FXP_OPEN: {
    size_t pos = 4;
    const unsigned char *path;
    uint32_t plen;

    return get_string (body, len, &pos, &path, &plen) && len - pos >= 4 &&
      get_u32 (body + pos) == FXF_READ;
  }
  default:
    return false;
  }
}

/* One request from the host: answer it here or queue it for sftp-server. */
static void
take_request (const unsigned char *p, size_t plen, struct buffer *to_server)
{
  uint8_t type = p[4];
  const unsigned char *body = p + 5;
  size_t len = plen - 5, pos = 4;
  const unsigned char *s;
  uint32_t slen, id = len >= 4 ? get_u32 (body) : 0;

  if (type != FXP_INIT && len < 4)
    goto forward;               /* malformed: sftp-server says so */

  if (type == FXP_READ && get_string (body, len, &pos, &s, &slen) &&
      len - pos >= 12) {
    struct tracked *f = find_file (s, slen);

    if (f && nr_changes == 0 && pipes_fit) {
      uint64_t offset = (uint64_t) get_u32 (body + pos) << 32 |
                        get_u32 (body + pos + 4);

      answer_read (id, f->fd, offset, get_u32 (body + pos + 8));
      return;
    }
    forwarded++;
  }
  else if (type == FXP_CLOSE && get_string (body, len, &pos, &s, &slen)) {
    struct tracked *f = find_file (s, slen);

    if (f) {
      close (f->fd);
      *f = files[--nr_files];
    }
  }

  if (!only_looks (type, body, len)) {
    changes = grow (changes, nr_changes, sizeof *changes);
    changes[nr_changes++] = id;
  }
  else if (type == FXP_OPEN && nr_changes == 0 &&
           get_string (body, len, &pos, &s, &slen) &&
           memchr (s, '\0', slen) == NULL && slen < 4096) {
    /* Opened now, as sftp-server will: nothing queued before it
     * changes what the path names.
     */
    char path[4096];
    struct stat st;
    int fd;

    memcpy (path, s, slen);
    path[slen] = '\0';
    fd = open (path, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
    if (fd >= 0 && (fstat (fd, &st) == -1 || !S_ISREG (st.st_mode))) {
      close (fd);               /* devices and fifos: sftp-server's */
      fd = -1;
    }
    if (fd >= 0) {
      opens = grow (opens, nr_opens, sizeof *opens);
      opens[nr_opens++] = (struct pending_open) { id, fd };
    }
  }
 forward:
  buffer_append (to_server, p, plen);
}

/* One answer from sftp-server, on its way to the host. */
static void
take_answer (const unsigned char *p, size_t plen)
{
  const unsigned char *body = p + 5;
  size_t len = plen - 5, pos = 4;
  uint32_t id;

  if (p[4] == FXP_VERSION || len < 4)
    return;
  id = get_u32 (body);
  forget_change (id);
  for (size_t i = 0; i < nr_opens; i++) {
    const unsigned char *s;
    uint32_t slen;
    int fd = opens[i].fd;

    if (opens[i].id != id)
      continue;
    opens[i] = opens[--nr_opens];
    if (p[4] == FXP_HANDLE && get_string (body, len, &pos, &s, &slen) &&
        slen <= sizeof files->handle) {
      struct tracked *f = find_file (s, slen);

      if (f)                    /* sftp-server reused it: the new file */
        close (f->fd);
      else {
        files = grow (files, nr_files, sizeof *files);
        f = &files[nr_files++];
      }
      memcpy (f->handle, s, slen);
      f->handle_len = slen;
      f->fd = fd;
    }
    else
      close (fd);
    break;
  }
}

/* A pipe with room for an answer of MAX_READ bytes spread over pages
 * (plus one page each for a misaligned start and the header); false if
 * the kernel will not make it that large.
 */
static bool
make_pipe (int fds[2])
{
  int want = MAX_READ + 2 * 4096, size;

  if (pipe2 (fds, O_CLOEXEC) == -1)
    die ("pipe");
  size = fcntl (fds[1], F_SETPIPE_SZ, want);
  return size >= want;
}

static pid_t
start_server (char **argv, int *to_fd, int *from_fd)
{
  int in[2], out[2];
  pid_t pid;

  if (pipe2 (in, O_CLOEXEC) == -1 || pipe2 (out, O_CLOEXEC) == -1)
    die ("pipe");
  pid = fork ();
  if (pid == -1)
    die ("fork");
  if (pid == 0) {
    dup2 (in[0], STDIN_FILENO);
    dup2 (out[1], STDOUT_FILENO);
    execvp (argv[0], argv);
    fprintf (stderr, PROG ": %s: %s\n", argv[0], strerror (errno));
    _exit (127);
  }
  close (in[0]);
  close (out[1]);
  *to_fd = in[1];
  *from_fd = out[0];
  if (fcntl (*to_fd, F_SETFL, O_NONBLOCK) == -1)
    die ("fcntl");
  return pid;
}

int
main (int argc, char *argv[])
{
  struct buffer from_host = { 0 }, to_server = { 0 }, from_server = { 0 };
  bool host_open = true, host_spoke = false, server_open = true;
  unsigned waited_ms = 0;
  int to_fd, from_fd, status;
  pid_t server;

  if (argc < 2) {
    fprintf (stderr, "usage: " PROG " SFTP-SERVER [ARGS...]\n");
    return EXIT_FAILURE;
  }
  signal (SIGPIPE, SIG_IGN);
  pipes_fit = make_pipe (data_pipe) && make_pipe (answer_pipe);
  server = start_server (argv + 1, &to_fd, &from_fd);

  while (server_open) {
    struct pollfd fds[3] = {
      { .fd = host_open && to_server.end - to_server.start < SERVER_BACKLOG
                ? STDIN_FILENO : -1, .events = POLLIN },
      { .fd = from_fd, .events = POLLIN },
      { .fd = to_server.end > to_server.start ? to_fd : -1, .events = POLLOUT },
    };
    const unsigned char *p;
    size_t plen;

    if (poll (fds, 3, -1) == -1) {
      if (errno == EINTR)
        continue;
      die ("poll");
    }
    if (fds[0].revents) {
      host_open = buffer_fill (&from_host, STDIN_FILENO);
      if (host_open)
        host_spoke |= from_host.end > from_host.start;
      else if (!host_spoke && waited_ms < HOST_WAIT_MS) {
        /* A virtio port reads as ended until the host connects, which
         * sshfs does once the host has seen the guest say "ready".
         */
        usleep (10000);
        waited_ms += 10;
        host_open = true;
      }
      while ((p = next_packet (&from_host, &plen)) != NULL)
        take_request (p, plen, &to_server);
    }
    if (fds[2].revents) {
      ssize_t n = write (to_fd, to_server.data + to_server.start,
                         to_server.end - to_server.start);

      if (n == -1 && errno != EAGAIN && errno != EINTR)
        die ("write to sftp-server");
      if (n > 0)
        to_server.start += n;
    }
    if (!host_open && to_fd >= 0 && to_server.end == to_server.start) {
      close (to_fd);            /* sftp-server sees the end and exits */
      to_fd = -1;
    }
    if (fds[1].revents) {
      size_t first;

      server_open = buffer_fill (&from_server, from_fd);
      first = from_server.start;
      while ((p = next_packet (&from_server, &plen)) != NULL)
        take_answer (p, plen);
      /* The whole answers, in one write. */
      send_host (from_server.data + first,
                 from_server.start - first);
    }
  }
  if (waitpid (server, &status, 0) == -1)
    die ("waitpid");
  fprintf (stderr, PROG ": %" PRIu64 " reads answered here, %" PRIu64
           " forwarded\n", answered, forwarded);
  return WIFEXITED (status) ? WEXITSTATUS (status) : EXIT_FAILURE;
}
