"""Soak test: many mixed requests from several clients while the server's memory is recorded.

Starts `bert-serving-start` on free 127.0.0.1 ports, sends a bounded number of requests from
several client threads (varied sizes and lengths, Chinese and English, some non-blocking
batches and some invalid requests), samples the resident set size (RSS) of every server
process once a second from /proc, and reports the growth of each process between the end of
the warm-up and the end of the run.

    python scripts/soak.py -requests 20000 -clients 4 -max_seconds 900 -markdown docs/soak.md

Linux only, because RSS is read from /proc.
"""
import argparse
import json
import os
import random
import socket
import subprocess
import sys
import threading
import time

from bert_serving.client import BertClient, BertRequestError

WORDS = ('service vector sentence embedding model worker queue batch latency memory '
         'search cluster classify answer question 今天 天气 很好 我们 模型 向量').split()


def free_port():
    with socket.socket() as sock:
        sock.bind(('127.0.0.1', 0))
        return sock.getsockname()[1]


def process_tree(pid):
    """Return {pid: name} for `pid` and its live descendants."""
    parents = {}
    for entry in os.listdir('/proc'):
        if entry.isdigit():
            try:
                with open('/proc/%s/stat' % entry) as f:
                    fields = f.read().rsplit(')', 1)[1].split()
                parents[int(entry)] = int(fields[1])
            except OSError:
                continue
    tree, frontier = {pid}, {pid}
    while frontier:
        frontier = {child for child, parent in parents.items() if parent in frontier} - tree
        tree |= frontier
    return tree


def rss_mb(pid):
    try:
        with open('/proc/%d/status' % pid) as f:
            for line in f:
                if line.startswith('VmRSS:'):
                    return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def describe(pid):
    """Name a process the server's status does not list, from its command line."""
    try:
        with open('/proc/%d/cmdline' % pid, 'rb') as f:
            command = f.read().replace(b'\0', b' ').decode(errors='replace')
    except OSError:
        return str(pid)
    return 'resource tracker' if 'resource_tracker' in command else 'pid %d' % pid


def process_names(server_pid, client):
    """Name the server's processes from its status: VENTILATOR, SINK, WORKER-n."""
    names = {server_pid: 'VENTILATOR'}
    for name, pid in client.server_status['process_pids'].items():
        names[pid] = name
    return names


def run_client(index, args, counters, stop):
    rng = random.Random(index)
    with BertClient(ip='127.0.0.1', port=args.port, port_out=args.port_out,
                    check_length=False, timeout=120_000) as bc:
        while not stop.is_set():
            with counters['lock']:
                if counters['sent'] >= args.requests:
                    return
                counters['sent'] += 1
            size = rng.choice([1, 1, 2, 4, 8, 16, 64])
            texts = [' '.join(rng.choices(WORDS, k=rng.randint(1, 60))) for _ in range(size)]
            kind = rng.random()
            try:
                if kind < 0.05:
                    bc.request_id += 1
                    bc.pending_request.add(bc.request_id)
                    bc.sender.send_multipart([bc.identity, b'[1, 2]', b'%d' % bc.request_id,
                                              b'2'])
                    bc._recv_ndarray(bc.request_id)
                elif kind < 0.15:
                    for _ in range(3):
                        bc.encode(texts, blocking=False)
                    bc.fetch_all()
                else:
                    bc.encode(texts)
                with counters['lock']:
                    counters['ok'] += 1
            except BertRequestError:
                with counters['lock']:
                    counters['rejected'] += 1


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('-requests', type=int, default=20_000, help='requests to send in all')
    parser.add_argument('-clients', type=int, default=4, help='concurrent client threads')
    parser.add_argument('-max_seconds', type=float, default=900,
                        help='stop sending after this many seconds even if requests remain')
    parser.add_argument('-warmup_fraction', type=float, default=0.1,
                        help='share of the requests before the baseline RSS is taken')
    parser.add_argument('-json', type=str, default=None, help='write the summary here as JSON')
    parser.add_argument('-markdown', type=str, default=None, help='write a report here')
    args = parser.parse_args(argv)
    args.port, args.port_out = free_port(), free_port()

    server = subprocess.Popen([sys.executable, '-m', 'bert_serving.server.cli', '-ip',
                               '127.0.0.1', '-port', str(args.port), '-port_out',
                               str(args.port_out)], stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    try:
        with BertClient(ip='127.0.0.1', port=args.port, port_out=args.port_out,
                        timeout=180_000) as probe:
            names = process_names(server.pid, probe)
        counters = {'lock': threading.Lock(), 'sent': 0, 'ok': 0, 'rejected': 0}
        stop = threading.Event()
        threads = [threading.Thread(target=run_client, args=(i, args, counters, stop))
                   for i in range(args.clients)]
        start = time.monotonic()
        for t in threads:
            t.start()

        samples, baseline = [], None
        while any(t.is_alive() for t in threads):
            time.sleep(1)
            elapsed = time.monotonic() - start
            sample = {names.get(pid) or describe(pid): rss_mb(pid)
                      for pid in process_tree(server.pid)}
            samples.append((elapsed, counters['sent'], sample))
            if baseline is None and counters['sent'] >= args.requests * args.warmup_fraction:
                baseline = sample
            if elapsed > args.max_seconds:
                stop.set()
        for t in threads:
            t.join()
        duration = time.monotonic() - start
        final = samples[-1][2] if samples else {}
        baseline = baseline or (samples[0][2] if samples else {})
        summary = {
            'requests': counters['sent'], 'ok': counters['ok'], 'rejected': counters['rejected'],
            'clients': args.clients, 'seconds': round(duration, 1),
            'rss_mb_after_warmup': {k: round(v, 1) for k, v in baseline.items() if v},
            'rss_mb_at_end': {k: round(v, 1) for k, v in final.items() if v},
            'growth_mb': {k: round(final[k] - baseline[k], 1) for k in final
                          if final.get(k) and baseline.get(k)},
        }
    finally:
        server.terminate()
        server.wait(60)

    print(json.dumps(summary, indent=1))
    if args.json:
        with open(args.json, 'w') as f:
            json.dump(summary, f, indent=1)
    if args.markdown:
        write_markdown(args.markdown, summary)
    return summary


def write_markdown(path, summary):
    lines = ['# Soak test', '',
             'Recorded by `scripts/soak.py` on %s (%s, %d cores), %d requests (%d answered, %d '
             'rejected on purpose) from %d clients in %.0f s.' % (
                 time.strftime('%Y-%m-%d'), _cpu_model(), os.cpu_count(), summary['requests'],
                 summary['ok'], summary['rejected'], summary['clients'], summary['seconds']),
             '', '| process | RSS after warm-up (MB) | RSS at end (MB) | growth (MB) |',
             '| --- | --- | --- | --- |']
    for name in sorted(summary['growth_mb']):
        lines.append('| %s | %.1f | %.1f | %+.1f |' % (
            name, summary['rss_mb_after_warmup'][name], summary['rss_mb_at_end'][name],
            summary['growth_mb'][name]))
    with open(path, 'w', encoding='utf-8') as f:
        f.write('\n'.join(lines) + '\n')


def _cpu_model():
    try:
        with open('/proc/cpuinfo') as f:
            for line in f:
                if line.startswith('model name'):
                    return line.split(':', 1)[1].strip()
    except OSError:
        pass
    return 'unknown CPU'


if __name__ == '__main__':
    main()
