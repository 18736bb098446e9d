#!/usr/bin/python3
# SPDX-License-Identifier: BSD-3-Clause
"""Helpers for tests/test-sftp-relay.sh.

serve RELAY SFTP-SERVER DIR MNT SSHFS-OPTS ERRLOG [--slow]
    join the relay (in front of sftp-server -d DIR) and sshfs -o passive
    on MNT with a socket pair, as QEMU's port does in the guest; wait for
    both.  --slow puts a 50 ms delay on sftp-server's input.
delay SFTP-SERVER DIR
    sftp-server behind that delay (what --slow runs as the server).
rw FILE EXPECTED
    through one read-only and one read-write descriptor of FILE (in the
    mount): write a chunk, read it straight back; also after a truncate.
    EXPECTED, a copy of FILE's old content, gets the same writes.
"""
import os
import random
import socket
import subprocess
import sys
import time


def serve(relay, server, directory, mnt, opts, errlog, *rest):
    cmd = [relay, server, "-d", directory]
    if rest == ("--slow",):
        cmd = [relay, sys.executable, sys.argv[0], "delay", server, directory]
    guest, host = socket.socketpair()
    with open(errlog, "w") as err:
        r = subprocess.Popen(cmd, stdin=guest, stdout=guest, stderr=err)
        s = subprocess.Popen(["sshfs", "-f", "-o",
                              "passive,max_read=65536,direct_io," + opts,
                              ":" + directory, mnt], stdin=host, stdout=host)
        guest.close()
        host.close()
        ss = s.wait()
        if ss != 0:
            r.terminate()       # it would wait for the host to connect
        rs = r.wait()
    return rs or ss


def delay(server, directory):
    p = subprocess.Popen([server, "-d", directory], stdin=subprocess.PIPE)
    while True:
        data = os.read(0, 65536)
        if not data:
            break
        time.sleep(0.05)
        p.stdin.write(data)
        p.stdin.flush()
    p.stdin.close()
    return p.wait()


def rw(path, expected):
    size = os.path.getsize(path)
    ro = os.open(path, os.O_RDONLY)     # the relay answers reads of this one
    wr = os.open(path, os.O_RDWR)
    ex = os.open(expected, os.O_RDWR)
    rng = random.Random(1)
    for i in range(30):
        length = rng.randrange(1, 20000)
        offset = rng.randrange(0, size - length)
        chunk = os.urandom(length)
        os.pwrite(wr, chunk, offset)
        os.pwrite(ex, chunk, offset)
        got = os.pread(ro, length, offset)
        if got != chunk:
            sys.exit("write %d (%d bytes at %d) not seen by the read after it"
                     % (i, length, offset))
    os.ftruncate(wr, 70000)
    os.ftruncate(ex, 70000)
    if os.pread(ro, 10, 70000) != b"":
        sys.exit("a read past the end after a truncate returned data")
    if os.pread(ro, 100, 69950) != os.pread(ex, 100, 69950):
        sys.exit("the last bytes before a truncate's end differ")
    for fd in (ro, wr, ex):
        os.close(fd)
    return 0


if __name__ == "__main__":
    verbs = {"serve": serve, "delay": delay, "rw": rw}
    sys.exit(verbs[sys.argv[1]](*sys.argv[2:]))
