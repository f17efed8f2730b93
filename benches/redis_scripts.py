#!/usr/bin/env python3
"""The Redis server's instructions per call of each script of one task's path (issue 17 §3), under callgrind.

The server's share of a task's CPU is almost all the backend's Lua scripts (`INFO commandstats`: `EVALSHA` 205 of
222 µs per task). CPU time moves by 2x with the machine's load; an instruction count does not. This runs a
`redis-server` under callgrind on a free loopback port, loads the scripts as `refcache-backends/src/redis/scripts.rs`
has them (the guard in front of the guarded ones, as `Scripts::new` does), and drives one task's path through them
the way the backend does in `workers` mode, with records, specs and values of the sizes the bench's no-op task has,
one script at a time over N tasks (pipelined), with the subscribers the 4-worker bench has (5 on `P:events`, 4 on
`P:queued`). Between the phases it zeroes and dumps callgrind's counters (`callgrind_control`), so each figure is
that script's instructions per call on the server, reading and parsing the command and writing its answer included.

    python3 benches/redis_scripts.py                  # both paths, 480 tasks
    python3 benches/redis_scripts.py --tasks 1000 --scripts /path/to/scripts.rs

Paths: `take` (one task at a time: the worker holds nothing, its `take` claims), `long` (the 4-worker batch: a
worker that holds tasks reads with a plain XREADGROUP of up to 48 entries, then `claim`s each when a slot frees).
Needs valgrind (callgrind_control) and redis-server. No Python packages (a small RESP client below).
"""
import argparse, glob, os, re, shutil, socket, subprocess, sys, tempfile, threading, time


class Resp:
    def __init__(self, port):
        self.s = socket.create_connection(('127.0.0.1', port))
        self.buf = b''

    def send(self, *cmds):
        out = []
        for c in cmds:
            out.append(b'*%d\r\n' % len(c))
            for a in c:
                a = a if isinstance(a, bytes) else str(a).encode()
                out.append(b'$%d\r\n%s\r\n' % (len(a), a))
        self.s.sendall(b''.join(out))

    def _line(self):
        while b'\r\n' not in self.buf:
            self.buf += self.s.recv(1 << 20)
        line, self.buf = self.buf.split(b'\r\n', 1)
        return line

    def _n(self, n):
        while len(self.buf) < n + 2:
            self.buf += self.s.recv(1 << 20)
        data, self.buf = self.buf[:n], self.buf[n + 2:]
        return data

    def read(self):
        line = self._line()
        kind = line[:1]
        if kind == b'+':
            return line[1:].decode()
        if kind == b'-':
            return RuntimeError(line[1:].decode())
        if kind == b':':
            return int(line[1:])
        if kind == b'$':
            n = int(line[1:])
            return None if n < 0 else self._n(n).decode()
        if kind == b'*':
            n = int(line[1:])
            return None if n < 0 else [self.read() for _ in range(n)]
        raise ValueError(line)

    def cmd(self, *c):
        self.send(c)
        reply = self.read()
        if isinstance(reply, RuntimeError):
            raise reply
        return reply


def scripts(path):
    """The scripts' texts by name, as `Scripts::new` builds them."""
    src = open(path).read()
    consts = {m.group(1): m.group(3) for m in re.finditer(r'const (\w+): &str = r(#?)"(.*?)"\2;', src, re.S)}
    out = {name: consts['GUARD'] + consts[c] for name, c in re.findall(r'(\w+): guarded\((\w+)\)', src)}
    out.update({name: consts[c] for name, c in re.findall(r'(\w+): Script::new\((\w+)\)', src)})
    return out


POLICY = ('{"owner":null,"visibility":"public","permissions":{"owner":"rwx","session":"r","public":"r"},'
          '"allowed_actors":[],"denied_actors":[]}')


def info(ref, status, started='null', finished='null'):
    return ('{"ref_id":"%s","task_name":"bench.redis.noop","namespace":"bench","status":"%s","progress":null,'
            '"status_message":null,"created_at":"2026-12-07T22:00:00.123Z","updated_at":"2026-12-07T22:00:00.123Z",'
            '"started_at":%s,"finished_at":%s,"error":null,"retry_count":0,"max_retries":0,"retry_history":[],'
            '"session_id":null,"queue_position":null,"policy":%s}') % (ref, status, started, finished, POLICY)


def spec(ref, i):
    return ('{"ref_id":"%s","key":"%064x","task_name":"bench.redis.noop","namespace":"bench","args":{"i":%d},'
            '"options":{"ttl":{"secs":600,"nanos":0},"priority":0,"max_retries":0,"execution_timeout":null,'
            '"session_id":null,"max_concurrent":null,"output_cap":null},"policy":%s,"actor":null,'
            '"submitted_at":null}') % (ref, i, i, POLICY)


def value(ref, i):
    return ('{"ref_id":"%s","key":"%064x","task_name":"bench.redis.noop","namespace":"bench","value":%d,'
            '"created_at":"2026-12-07T22:00:00.123Z","expires_at":"2026-12-07T22:10:00.123Z","policy":%s,'
            '"total_items":1}') % (ref, i, i, POLICY)


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    ap = argparse.ArgumentParser()
    ap.add_argument('--scripts', default=os.path.join(here, '..', 'refcache-backends', 'src', 'redis', 'scripts.rs'))
    ap.add_argument('--tasks', type=int, default=480)
    args = ap.parse_args()
    texts = scripts(args.scripts)
    work = tempfile.mkdtemp(prefix='refcache-redis-scripts-')
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        port = s.getsockname()[1]
    out = os.path.join(work, 'callgrind.out')
    server = subprocess.Popen(['valgrind', '--tool=callgrind', '--callgrind-out-file=' + out, 'redis-server',
                               '--port', str(port), '--save', '', '--appendonly', 'no', '--dir', work],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(600):
            try:
                c = Resp(port)
                c.cmd('PING')
                break
            except OSError:
                time.sleep(0.1)
        else:
            sys.exit('redis-server under callgrind did not start')
        for path in ('take', 'long'):
            run(c, port, server.pid, out, texts, args.tasks, path)
        c.send(['SHUTDOWN', 'NOSAVE'])
        server.wait(timeout=60)
    finally:
        if server.poll() is None:
            server.kill()
        shutil.rmtree(work, ignore_errors=True)


def run(c, port, pid, out, texts, n, path):
    prefix = 'sim-' + path
    sha = {name: c.cmd('SCRIPT', 'LOAD', texts[name]) for name in ('submit', 'take', 'claim', 'transition', 'get')}
    subscribers = []

    def drain(r):
        try:
            while r.s.recv(1 << 20):
                pass
        except OSError:
            pass

    for i in range(5):
        r = Resp(port)
        r.send(['SUBSCRIBE', prefix + ':events'] + ([prefix + ':queued'] if i > 0 else []))
        threading.Thread(target=drain, args=(r,), daemon=True).start()
        subscribers.append(r)
    time.sleep(0.5)
    c.cmd('XGROUP', 'CREATE', prefix + ':queue', 'workers', '0', 'MKSTREAM')

    def dumped():
        files = sorted(glob.glob(out + '.*'), key=os.path.getmtime)
        for line in open(files[-1]):
            if line.startswith(('summary:', 'totals:')):
                return int(line.split()[1])
        return 0

    def phase(name, cmds, per):
        subprocess.run(['callgrind_control', '-z', str(pid)], capture_output=True)
        replies = []
        for i in range(0, len(cmds), 100):
            chunk = cmds[i:i + 100]
            c.send(*chunk)
            replies += [c.read() for _ in chunk]
        subprocess.run(['callgrind_control', '-d', str(pid)], capture_output=True)
        time.sleep(0.3)
        print('  %-28s %8.0f instructions per task' % (name, dumped() / per))
        errors = [r for r in replies if isinstance(r, RuntimeError)]
        if errors:
            sys.exit('%s: %s' % (name, errors[0]))
        return replies

    print(f'path `{path}`, {n} tasks, server instructions (callgrind):')
    refs = ['bench:%032x' % i for i in range(n)]
    now = int(time.time() * 1000)
    started = '"2026-12-07T22:00:01.000Z"'
    phase('submit', [['EVALSHA', sha['submit'], 0, prefix, r, '%064x' % i, info(r, 'pending'), spec(r, i), now,
                      '7fffffff', '', '1', 1000000, '', '', 'a' * 32] for i, r in enumerate(refs)], n)
    if path == 'take':
        ids = [r[0] for r in phase('take (claims)', [['EVALSHA', sha['take'], 0, prefix, 'w1', 1, '1', started, 3]
                                                     for _ in refs], n)]
    else:
        reads = phase('XREADGROUP COUNT 48', [['XREADGROUP', 'GROUP', 'workers', 'w1', 'COUNT', 48, 'STREAMS',
                                               prefix + ':queue', '>'] for _ in range(-(-n // 48))], n)
        ids = [e[0] for r in reads for e in r[0][1]]
        phase('claim', [['EVALSHA', sha['claim'], 0, prefix, r, 'w1', info(r, 'processing', started), '0', 3]
                        for r in refs], n)
    answers = phase('transition (complete, ack)', [
        ['EVALSHA', sha['transition'], 0, prefix, r, ',processing,input_required,', 'complete',
         info(r, 'complete', started, '"2026-12-07T22:00:01.100Z"'), 600000, now, '', 'w1', value(r, i), 600000,
         ids[i], ''] for i, r in enumerate(refs)], n)
    if any(a != 'ok' for a in answers):
        sys.exit('transition did not answer ok: %r' % [a for a in answers if a != 'ok'][:2])
    if path == 'take':
        phase('get (the poll)', [['EVALSHA', sha['get'], 0, prefix, r] for r in refs], n)
    for r in subscribers:
        r.s.close()


if __name__ == '__main__':
    main()
