#!/usr/bin/python3
# SPDX-License-Identifier: LGPL-2.1-or-later
#
# A FUSE server that speaks the kernel protocol itself (include/uapi/linux/fuse.h),
# for tests that need a file system which stops answering: one directory of
# regular files, and on command it withholds its answers to chosen requests.
# A process whose request is withheld waits in the kernel (request_wait_answer():
# interruptible at first, unkillable once the server has read the request) until
# the server answers or the connection is aborted.
#
#   fuse-server.py --uid UID --gid GID NAME:SIZE[:MODE] ...
#
# The mount is made by the caller (tests/lib/fixture-fuse.c), which passes the
# /dev/fuse fd as fd 3. Byte i of each file is i % 251 until written; writes are
# kept in memory; the size never changes. Attributes and entries are never cached
# (valid for 0 s), so every stat and open reaches this server.
#
# Commands, one per line on stdin, each answered by one line starting "ok" on
# stdout:
#   hang OP...   withhold answers to these requests (LOOKUP GETATTR OPEN READ
#                WRITE FLUSH) from now on; replaces the previous set; "hang" alone
#                withholds nothing new
#   resume       answer every withheld request, in arrival order; withhold no more
#   count        "ok OP=N ..." requests seen per operation, answered or not
#   abort        close /dev/fuse: the kernel aborts the connection, every waiting
#                and later request fails with ENOTCONN; then exit
# Events on stdout:
#   ready                    INIT answered: the file system is usable
#   held OP UNIQUE TID       a request withheld; TID is the requesting thread
# EOF on stdin is "abort".

import errno
import os
import select
import stat
import struct
import sys

OPS = {1: 'LOOKUP', 2: 'FORGET', 3: 'GETATTR', 4: 'SETATTR', 14: 'OPEN', 15: 'READ', 16: 'WRITE',
       17: 'STATFS', 18: 'RELEASE', 20: 'FSYNC', 25: 'FLUSH', 26: 'INIT', 27: 'OPENDIR', 28: 'READDIR',
       29: 'RELEASEDIR', 34: 'ACCESS', 36: 'INTERRUPT', 38: 'DESTROY', 42: 'BATCH_FORGET'}
HANGABLE = {'LOOKUP', 'GETATTR', 'OPEN', 'READ', 'WRITE', 'FLUSH'}
NO_REPLY = {'FORGET', 'BATCH_FORGET', 'INTERRUPT'}
IN_HEADER = struct.Struct('<IIQQIIIHH')      # len opcode unique nodeid uid gid pid total_extlen padding
OUT_HEADER = struct.Struct('<IiQ')           # len error unique
ATTR = struct.Struct('<QQQQQQIIIIIIIIII')    # struct fuse_attr, 88 bytes
FOPEN_DIRECT_IO = 1                          # every read reaches us: a withheld READ is never served from cache
ROOT = 1


def parse_args(argv):
    uid = gid = 0
    files = []
    i = 0
    while i < len(argv):
        if argv[i] == '--uid':
            uid = int(argv[i + 1]); i += 2
        elif argv[i] == '--gid':
            gid = int(argv[i + 1]); i += 2
        else:
            parts = argv[i].split(':')
            mode = int(parts[2], 8) if len(parts) > 2 else 0o644
            files.append({'name': parts[0].encode(), 'size': int(parts[1]), 'mode': mode, 'blocks': {}})
            i += 1
    return uid, gid, files


class Server:
    def __init__(self, fd, uid, gid, files):
        self.fd, self.uid, self.gid, self.files = fd, uid, gid, files
        self.hang = set()
        self.held = []
        self.counts = {op: 0 for op in sorted(HANGABLE)}

    def say(self, line):
        sys.stdout.write(line + '\n')
        sys.stdout.flush()

    def reply(self, unique, error=0, payload=b''):
        try:
            os.write(self.fd, OUT_HEADER.pack(OUT_HEADER.size + len(payload), -error, unique) + payload)
        except OSError as e:
            if e.errno != errno.ENOENT:   # the request was interrupted or aborted meanwhile
                raise

    def attr(self, node):
        if node == ROOT:
            mode, size, nlink = stat.S_IFDIR | 0o755, 0, 2
        else:
            f = self.files[node - 2]
            mode, size, nlink = stat.S_IFREG | f['mode'], f['size'], 1
        return ATTR.pack(node, size, (size + 511) // 512, 0, 0, 0, 0, 0, 0, mode, nlink, self.uid, self.gid,
                         0, 4096, 0)

    def file_bytes(self, f, offset, size):
        end = min(offset + size, f['size'])
        out = bytearray()
        pos = offset
        while pos < end:
            block, off = divmod(pos, 4096)
            n = min(4096 - off, end - pos)
            data = f['blocks'].get(block)
            if data is not None:
                out += data[off:off + n]
            else:
                out += bytes((i % 251) for i in range(pos, pos + n))
            pos += n
        return bytes(out)

    def write_bytes(self, f, offset, data):
        if offset + len(data) > f['size']:
            return -errno.ENOSPC
        pos = offset
        while pos < offset + len(data):
            block, off = divmod(pos, 4096)
            n = min(4096 - off, offset + len(data) - pos)
            buf = f['blocks'].get(block)
            if buf is None:
                buf = f['blocks'][block] = bytearray(self.file_bytes(f, block * 4096, 4096).ljust(4096, b'\0'))
            buf[off:off + n] = data[pos - offset:pos - offset + n]
            pos += n
        return len(data)

    def answer(self, op, unique, node, body):
        if op == 'INIT':
            major, minor, readahead, _flags = struct.unpack_from('<IIII', body)
            if major != 7:
                return self.reply(unique, errno.EPROTO)
            out = struct.pack('<IIIIHHIIHHII24x', 7, min(minor, 31), readahead, 0, 16, 12, 128 * 1024, 1, 0, 0, 0, 0)
            self.reply(unique, 0, out)
            self.say('ready')
        elif op == 'LOOKUP':
            name = body.split(b'\0', 1)[0]
            for i, f in enumerate(self.files):
                if node == ROOT and f['name'] == name:
                    return self.reply(unique, 0, struct.pack('<QQQQII', i + 2, 1, 0, 0, 0, 0) + self.attr(i + 2))
            self.reply(unique, errno.ENOENT)
        elif op == 'GETATTR':
            self.reply(unique, 0, struct.pack('<QII', 0, 0, 0) + self.attr(node))
        elif op in ('OPEN', 'OPENDIR'):
            self.reply(unique, 0, struct.pack('<QIi', 0, FOPEN_DIRECT_IO if op == 'OPEN' else 0, 0))
        elif op == 'READ':
            _fh, offset, size = struct.unpack_from('<QQI', body)
            self.reply(unique, 0, self.file_bytes(self.files[node - 2], offset, size))
        elif op == 'WRITE':
            _fh, offset, size = struct.unpack_from('<QQI', body)
            n = self.write_bytes(self.files[node - 2], offset, body[40:40 + size])
            if n < 0:
                return self.reply(unique, -n)
            self.reply(unique, 0, struct.pack('<II', n, 0))
        elif op == 'READDIR':
            _fh, offset, size = struct.unpack_from('<QQI', body)
            entries = [(ROOT, b'.', 4), (ROOT, b'..', 4)] + [(i + 2, f['name'], 8) for i, f in enumerate(self.files)]
            out = b''
            for k in range(offset, len(entries)):
                ino, name, dtype = entries[k]
                ent = struct.pack('<QQII', ino, k + 1, len(name), dtype) + name
                ent += b'\0' * (-len(ent) % 8)
                if len(out) + len(ent) > size:
                    break
                out += ent
            self.reply(unique, 0, out)
        elif op == 'STATFS':
            self.reply(unique, 0, struct.pack('<QQQQQIIII24x', 1 << 20, 0, 0, len(self.files) + 1, 0, 4096, 255,
                                              4096, 0))
        elif op in ('RELEASE', 'RELEASEDIR', 'FLUSH', 'FSYNC', 'ACCESS'):
            self.reply(unique)
        elif op == 'SETATTR':
            self.reply(unique, errno.EPERM)
        elif op == 'DESTROY':
            self.reply(unique)
            sys.exit(0)
        elif op in NO_REPLY:
            pass
        else:
            self.reply(unique, errno.ENOSYS)

    def request(self, data):
        length, opcode, unique, node, _uid, _gid, pid, _ext, _pad = IN_HEADER.unpack_from(data)
        op = OPS.get(opcode, str(opcode))
        body = data[IN_HEADER.size:length]
        if op in self.counts:
            self.counts[op] += 1
        if op in self.hang:
            self.held.append((op, unique, node, body))
            self.say('held %s %d %d' % (op, unique, pid))
            return
        self.answer(op, unique, node, body)

    def command(self, line):
        words = line.split()
        if not words:
            return
        if words[0] == 'hang':
            bad = [w for w in words[1:] if w not in HANGABLE]
            if bad:
                return self.say('error cannot hang %s' % ' '.join(bad))
            self.hang = set(words[1:])
        elif words[0] == 'resume':
            self.hang = set()
            held, self.held = self.held, []
            for op, unique, node, body in held:
                self.answer(op, unique, node, body)
        elif words[0] == 'count':
            return self.say('ok ' + ' '.join('%s=%d' % kv for kv in sorted(self.counts.items())))
        elif words[0] == 'abort':
            os.close(self.fd)
            self.say('ok')
            sys.exit(0)
        else:
            return self.say('error unknown command %s' % words[0])
        self.say('ok')

    def run(self):
        poll = select.poll()
        poll.register(self.fd, select.POLLIN)
        poll.register(0, select.POLLIN)
        pending = b''
        while True:
            for fd, _ev in poll.poll():
                if fd == self.fd:
                    try:
                        data = os.read(self.fd, 1024 * 1024 + 4096)
                    except OSError as e:
                        if e.errno in (errno.EINTR, errno.EAGAIN, errno.ENOENT):
                            continue
                        if e.errno == errno.ENODEV:   # unmounted, or aborted
                            sys.exit(0)
                        raise
                    self.request(data)
                else:
                    chunk = os.read(0, 4096)
                    if not chunk:
                        self.command('abort')
                    pending += chunk
                    while b'\n' in pending:
                        line, pending = pending.split(b'\n', 1)
                        self.command(line.decode())


if __name__ == '__main__':
    uid, gid, files = parse_args(sys.argv[1:])
    Server(3, uid, gid, files).run()
