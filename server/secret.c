/* SPDX-License-Identifier: BSD-3-Clause */
/* The passphrase of a LUKS container, for the helper VM (vm.c hands it
 * to QEMU through a pipe, as a fw_cfg file the guest reads): from
 * --key-file FILE, all of its bytes as cryptsetup --key-file reads them;
 * from standard input with --key-file -, likewise; or typed at a prompt
 * on the terminal, without echo, up to the end of the line.  It never
 * appears on a command line, in the environment or in a file of ours;
 * the buffer is kept out of swap and wiped when freed.
 *
 * Also the names of logical volumes (--lv VG/LV), which go on the
 * guest's kernel command line and so are checked here.
 */

#include <config.h>

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <termios.h>
#include <unistd.h>

#include "qemount.h"

static void
secret_alloc (struct secret *s)
{
  s->data = calloc (1, MAX_KEY_BYTES + 1);
  if (s->data == NULL) {
    perror ("calloc");
    exit (EXIT_ERROR);
  }
  mlock (s->data, MAX_KEY_BYTES + 1);   /* best effort: may be limited */
  s->len = 0;
}

void
secret_free (struct secret *s)
{
  if (s->data) {
    explicit_bzero (s->data, MAX_KEY_BYTES + 1);
    munlock (s->data, MAX_KEY_BYTES + 1);
    free (s->data);
  }
  s->data = NULL;
  s->len = 0;
}

/* All of fd, at most MAX_KEY_BYTES.  name is for messages. */
static int
read_all (int fd, const char *name, struct secret *s)
{
  for (;;) {
    ssize_t n = read (fd, s->data + s->len, MAX_KEY_BYTES + 1 - s->len);

    if (n == 0)
      break;
    if (n < 0) {
      if (errno == EINTR && !interrupted)
        continue;
      if (interrupted) {
        errorf ("interrupted");
        return EXIT_INTERRUPTED;
      }
      errorf ("%s: %m", name);
      return EXIT_ERROR;
    }
    s->len += n;
    if (s->len > MAX_KEY_BYTES) {
      errorf ("%s: longer than %d bytes: not a LUKS passphrase or key file",
              name, MAX_KEY_BYTES);
      return EXIT_USAGE;
    }
  }
  if (s->len == 0) {
    errorf ("%s: empty: no passphrase", name);
    return EXIT_NO_KEY;
  }
  return EXIT_OK;
}

/* A line from the terminal, without echo. */
static int
prompt (const char *image, struct secret *s)
{
  struct termios old, quiet;
  int fd = open ("/dev/tty", O_RDWR | O_CLOEXEC);
  int status = EXIT_OK;
  char c;

  if (fd == -1 || tcgetattr (fd, &old) == -1) {
    errorf ("/dev/tty: %m");
    if (fd >= 0)
      close (fd);
    return EXIT_ERROR;
  }
  quiet = old;
  quiet.c_lflag &= ~(ECHO | ECHONL);
  quiet.c_lflag |= ICANON;
  dprintf (fd, "Passphrase for %s: ", image);
  tcsetattr (fd, TCSAFLUSH, &quiet);
  for (;;) {
    ssize_t n = read (fd, &c, 1);

    if (n < 0 && errno == EINTR && !interrupted)
      continue;
    if (n < 0 || interrupted) {
      status = interrupted ? EXIT_INTERRUPTED : EXIT_ERROR;
      break;
    }
    if (n == 0 || c == '\n')
      break;
    if (s->len == MAX_KEY_BYTES) {
      status = EXIT_USAGE;
      break;
    }
    s->data[s->len++] = c;
  }
  tcsetattr (fd, TCSAFLUSH, &old);
  dprintf (fd, "\n");
  close (fd);
  c = 0;                        /* the last character typed */
  if (status == EXIT_OK && s->len == 0) {
    errorf ("%s: no passphrase given", image);
    status = EXIT_NO_KEY;
  }
  else if (status == EXIT_INTERRUPTED)
    errorf ("interrupted");
  else if (status != EXIT_OK)
    errorf ("%s: cannot read the passphrase from the terminal", image);
  return status;
}

/* The passphrase for image: from key_file ("-": standard input), else,
 * when needed (the host saw LUKS on the disk), from the terminal.
 * Leaves s empty (len 0) when there is none to give.
 */
int
secret_get (const char *image, const char *key_file, bool needed,
            struct secret *s)
{
  int status, fd;

  s->data = NULL;
  s->len = 0;
  if (key_file == NULL && !needed)
    return EXIT_OK;
  secret_alloc (s);
  if (key_file && strcmp (key_file, "-") == 0 && !isatty (STDIN_FILENO))
    status = read_all (STDIN_FILENO, "standard input", s);
  else if (key_file && strcmp (key_file, "-") != 0) {
    fd = open (key_file, O_RDONLY | O_CLOEXEC);
    if (fd == -1) {
      errorf ("--key-file %s: %m", key_file);
      status = EXIT_NO_KEY;
    }
    else {
      status = read_all (fd, key_file, s);
      close (fd);
    }
  }
  else if (isatty (STDIN_FILENO))
    status = prompt (image, s);
  else {
    errorf ("%s is LUKS-encrypted: give --key-file FILE (or --key-file - "
            "for standard input)", image);
    status = EXIT_NO_KEY;
  }
  if (status != EXIT_OK)
    secret_free (s);
  return status;
}

/* VG/LV as LVM allows them: letters, digits, + _ . -, not starting with
 * a hyphen.  Nothing that could break the kernel command line.
 */
bool
lv_name_ok (const char *lv)
{
  const char *slash = strchr (lv, '/');

  if (slash == NULL || slash == lv || slash[1] == '\0' ||
      strchr (slash + 1, '/') || *lv == '-' || slash[1] == '-' ||
      strlen (lv) > 256)
    return false;
  for (const char *p = lv; *p; ++p)
    if (p != slash && strchr ("abcdefghijklmnopqrstuvwxyz"
                              "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
                              "0123456789+_.-", *p) == NULL)
      return false;
  return true;
}
