"""bert-serving-benchmark: the 1.10.0 benchmark experiments, run against a local server.

Each experiment varies one setting (client batch size, -max_batch_size, -max_seq_len,
number of concurrent clients, -pooling_layer) over the values given on the command line,
keeps every other setting at its base value, starts a fresh server for each value, and
measures the throughput that `num_client` concurrent BertClients see. The first two of
`-num_repeat` rounds are warm-up and not counted.
"""
import copy
import os
import random
import re
import sys
import threading
import time
from statistics import mean

from bert_serving.client import BertClient
from .helper import get_args_parser, set_logger

EXPERIMENTS = [
    ('client_batch_size', 'test_client_batch_size'),
    ('max_batch_size', 'test_max_batch_size'),
    ('max_seq_len', 'test_max_seq_len'),
    ('num_client', 'test_num_client'),
    ('pooling_layer', 'test_pooling_layer'),
]
WARM_UP_ROUNDS = 2


def get_benchmark_parser():
    parser = get_args_parser()
    parser.prog = 'bert-serving-benchmark'
    parser.description = 'Measure the throughput of a local bert-serving server.'

    group = parser.add_argument_group('Benchmark', 'the experiments to run')
    group.add_argument('-client_batch_size', type=int, default=4096,
                       help='sentences per encode call, where another setting varies')
    group.add_argument('-num_client', type=int, default=1,
                       help='concurrent clients, where another setting varies')
    group.add_argument('-test_client_batch_size', type=int, nargs='*', default=[1, 16, 256, 4096],
                       help='sentences per encode call to try')
    group.add_argument('-test_max_batch_size', type=int, nargs='*', default=[8, 32, 128, 512],
                       help='values of -max_batch_size to try')
    group.add_argument('-test_max_seq_len', type=int, nargs='*', default=[32, 64, 128, 256],
                       help='values of -max_seq_len to try')
    group.add_argument('-test_num_client', type=int, nargs='*', default=[1, 4, 16, 64],
                       help='numbers of concurrent clients to try')
    group.add_argument('-test_pooling_layer', type=int, nargs='*',
                       default=[-j for j in range(1, 13)],
                       help='single pooling layers to try; layers the model lacks are skipped')
    group.add_argument('-wait_till_ready', type=int, default=30,
                       help='seconds to wait for each server to load its model')
    group.add_argument('-client_vocab_file', type=str, default='README.md',
                       help='text file whose words make up the test sentences')
    group.add_argument('-num_repeat', type=int, default=10,
                       help='encode rounds per client and setting, at least 3, because the '
                            'first two are warm-up')
    group.add_argument('-output_file', type=str, default=None,
                       help='also write the result tables as Markdown to this file')
    return parser


def _load_words(path):
    if os.path.isfile(path):
        with open(path, encoding='utf-8', errors='replace') as f:
            words = re.findall(r'\w+', f.read())
        if words:
            return words
    return 'the quick brown fox jumps over the lazy dog while 今天 天气 很好'.split()


def _make_batch(words, size, length, rng):
    return [' '.join(rng.choices(words, k=max(1, length))) for _ in range(size)]


def _measure(args, words):
    """Start a server with `args`, run the clients, return sentences per second (all clients)."""
    from . import BertServer

    # Sentences fill -max_seq_len, or the 1.10.0 default of 25 tokens when it is not set.
    length = (args.max_seq_len or 25) - 2
    server = BertServer(args)
    server.start()
    try:
        if not server.is_ready.wait(args.wait_till_ready):
            raise RuntimeError('the server was not ready within %ds (-wait_till_ready)'
                               % args.wait_till_ready)
        rounds = [[] for _ in range(args.num_client)]

        def run_client(index):
            rng = random.Random(index)
            batch = _make_batch(words, args.client_batch_size, length, rng)
            with BertClient(port=args.port, port_out=args.port_out, check_length=False,
                            timeout=-1) as bc:
                for _ in range(args.num_repeat):
                    start = time.perf_counter()
                    bc.encode(batch)
                    rounds[index].append(time.perf_counter() - start)

        threads = [threading.Thread(target=run_client, args=(i,)) for i in range(args.num_client)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        per_client = [args.client_batch_size / mean(r[WARM_UP_ROUNDS:]) for r in rounds]
        return sum(per_client)
    finally:
        server.close()


def run_benchmark(args, stream=sys.stdout):
    if args.num_repeat <= WARM_UP_ROUNDS:
        raise ValueError('invalid -num_repeat %d: it must be at least %d because the first %d '
                         'rounds are warm-up' % (args.num_repeat, WARM_UP_ROUNDS + 1,
                                                 WARM_UP_ROUNDS))
    logger = set_logger('BENCHMARK', args.verbose)
    words = _load_words(args.client_vocab_file)
    tables = []
    for setting, flag in EXPERIMENTS:
        values = getattr(args, flag)
        if not values:
            continue
        lines = ['### %s' % setting, '', '| %s | sentences/s |' % setting, '| --- | --- |']
        for value in values:
            run_args = copy.deepcopy(args)
            setattr(run_args, setting, [value] if setting == 'pooling_layer' else value)
            try:
                speed = '%.1f' % _measure(run_args, words)
            except ValueError as error:  # ModelDirError, such as a layer the model lacks
                logger.warning('skipping %s=%s: %s', setting, value, error)
                speed = 'n/a (%s)' % error
            lines.append('| %s | %s |' % (value, speed))
            logger.info('%s=%s: %s sentences/s', setting, value, speed)
        tables.append('\n'.join(lines))

    report = '\n\n'.join(tables) + '\n'
    stream.write(report)
    if args.output_file:
        with open(args.output_file, 'w', encoding='utf-8') as f:
            f.write(report)
    return report


def main(argv=None):
    args = get_benchmark_parser().parse_args(argv)
    try:
        run_benchmark(args)
    except (ValueError, RuntimeError) as error:
        print('benchmark failed: %s' % error, file=sys.stderr)
        sys.exit(1)


if __name__ == '__main__':
    main()

