"""Command-line flags of bert-serving-start and bert-serving-terminate, and the colored loggers.

The flags, their aliases and their defaults are those of bert-as-service 1.10.0, so existing
start-up scripts run unchanged. Flags that may follow the model directory's own settings
(`-max_seq_len`, `-pooling_strategy`, `-pooling_layer`) default to None here, and
`bert_serving.server.model_dir` resolves them once the model is known.
"""
import argparse
import logging
import os
import sys
from enum import Enum

from bert_serving.client import __version__

__all__ = ['PoolingStrategy', 'get_args_parser', 'get_run_args', 'get_shutdown_parser',
           'set_logger', 'LEGACY_DEFAULTS']

# The 1.10.0 defaults of the flags that the model directory may override.
LEGACY_DEFAULTS = {'max_seq_len': 25, 'pooling_layer': [-2], 'pooling_strategy': 'REDUCE_MEAN'}


class PoolingStrategy(Enum):
    NONE = 0
    REDUCE_MAX = 1
    REDUCE_MEAN = 2
    REDUCE_MEAN_MAX = 3
    FIRST_TOKEN = 4
    LAST_TOKEN = 5
    CLS_TOKEN = 4
    SEP_TOKEN = 5
    CLS_POOLED = 6

    def __str__(self):
        return self.name

    @staticmethod
    def from_string(name):
        try:
            return PoolingStrategy[name.upper()]
        except KeyError:
            raise argparse.ArgumentTypeError(
                'invalid pooling strategy %r: choose one of %s'
                % (name, ', '.join(PoolingStrategy.__members__))) from None


class _StoreAndMarkGiven(argparse.Action):
    """Store the value and set `<dest>_given`, so that an explicit NONE differs from no flag."""

    def __call__(self, parser, namespace, values, option_string=None):
        setattr(namespace, self.dest, values)
        setattr(namespace, self.dest + '_given', True)


def check_max_seq_len(value):
    """Parse -max_seq_len: an integer above 3, or NONE (any case) for dynamic length."""
    if value is None or str(value).lower() == 'none':
        return None
    try:
        length = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(
            'invalid max_seq_len %r: give an integer above 3, or NONE' % (value,)) from None
    if length <= 3:
        raise argparse.ArgumentTypeError(
            'invalid max_seq_len %d: it must be above 3 because [CLS] and up to two [SEP] '
            'tokens take part of it; give a larger integer, or NONE' % length)
    return length


def get_args_parser():
    parser = argparse.ArgumentParser(
        prog='bert-serving-start',
        description='Start a BERT sentence-encoding service for BertClient over ZeroMQ.')

    paths = parser.add_argument_group('File paths', 'where the model is read from')
    paths.add_argument('-model_dir', type=str, default=None,
                       help='directory of a BERT model, in the Hugging Face layout (config.json, '
                            'vocab.txt, model.safetensors) or the Google layout (bert_config.json, '
                            'vocab.txt, bert_model.ckpt.*); by default the embedded '
                            'all-MiniLM-L6-v2 model')
    paths.add_argument('-tuned_model_dir', type=str, default=None,
                       help='directory of a fine-tuned checkpoint whose encoder weights replace '
                            'those of -model_dir')
    paths.add_argument('-ckpt_name', type=str, default='bert_model.ckpt',
                       help='checkpoint prefix inside the model directory, for Google-format models')
    paths.add_argument('-config_name', type=str, default='bert_config.json',
                       help='JSON config file inside the model directory, for Google-format models')
    paths.add_argument('-graph_tmp_dir', type=str, default=None,
                       help='accepted for compatibility with 1.10.0 and unused, because '
                            'TensorFlow 2 builds no frozen graph')

    model = parser.add_argument_group('BERT parameters', 'how the model and the pooling work')
    model.add_argument('-max_seq_len', type=check_max_seq_len, default=None,
                       action=_StoreAndMarkGiven,
                       help='maximum tokens per sentence including [CLS] and [SEP]; longer '
                            'sentences are truncated on the right. NONE pads each batch to its '
                            'longest sentence. Default: the model\'s sentence-transformers '
                            'max_seq_length when it has one, else 25')
    model.add_argument('-cased_tokenization', dest='do_lower_case', action='store_false',
                       default=True,
                       help='keep case and accents when tokenizing, for cased models')
    model.add_argument('-pooling_layer', type=int, nargs='+', default=None,
                       help='encoder layer(s) to pool, counted from 0 or from the end with '
                            'negative numbers; several layers are concatenated in the given '
                            'order. Default: the model\'s own pooling when it has one, else -2')
    model.add_argument('-pooling_strategy', type=PoolingStrategy.from_string, default=None,
                       choices=list(PoolingStrategy),
                       help='how token vectors become one sentence vector. Default: the '
                            'model\'s own pooling when it has one, else REDUCE_MEAN')
    model.add_argument('-mask_cls_sep', action='store_true', default=False,
                       help='zero the [CLS] and [SEP] vectors before pooling (not with the '
                            'strategies that select one of them)')
    model.add_argument('-no_special_token', action='store_true', default=False,
                       help='with is_tokenized=True input, do not add [CLS] and [SEP]')
    model.add_argument('-show_tokens_to_client', action='store_true', default=False,
                       help='send the tokens of each sentence back to clients that ask for them')
    model.add_argument('-no_position_embeddings', action='store_true', default=False,
                       help='do not add position embeddings to the token embeddings')

    serving = parser.add_argument_group('Serving', 'ports, processes and devices')
    serving.add_argument('-port', '-port_in', '-port_data', type=int, default=5555,
                         help='port that receives requests from clients')
    serving.add_argument('-port_out', '-port_result', type=int, default=5556,
                         help='port that publishes results to clients')
    serving.add_argument('-http_port', type=int, default=None,
                         help='port for the HTTP API; no HTTP API without it')
    serving.add_argument('-http_max_connect', type=int, default=10,
                         help='maximum concurrent HTTP requests')
    serving.add_argument('-http_max_body_mb', type=float, default=100,
                         help='maximum size of an HTTP request body in MiB; larger bodies get '
                              '413 Content Too Large')
    serving.add_argument('-http_api_key_file', type=str, default=None,
                         help='file of API keys for the HTTP API, one per line; blank lines and '
                              'lines starting with # are skipped. With it, every endpoint but '
                              'GET /health requires the header Authorization: Bearer <key>')
    serving.add_argument('-cors', type=str, default='*',
                         help='value of the Access-Control-Allow-Origin header of HTTP replies')
    serving.add_argument('-num_worker', type=int, default=1,
                         help='number of worker processes, each with its own copy of the model')
    serving.add_argument('-max_batch_size', type=int, default=256,
                         help='maximum sentences in one forward pass; larger requests are split')
    serving.add_argument('-max_batch_tokens', type=int, default=8192,
                         help='maximum sentences x padded length in one forward pass; bounds '
                              'the memory of a batch of long sentences')
    serving.add_argument('-coalesce_wait_ms', type=float, default=0,
                         help='milliseconds a small batch may wait for jobs of other requests '
                              'to join it while a worker is free; queued jobs are merged '
                              'anyway while the workers are busy')
    serving.add_argument('-priority_batch_size', type=int, default=16,
                         help='requests with fewer sentences than this overtake queued larger ones')
    serving.add_argument('-cpu', action='store_true', default=False,
                         help='run on the CPU even when a GPU is available')
    serving.add_argument('-xla', action='store_true', default=False,
                         help='compile the forward pass with XLA')
    serving.add_argument('-fp16', action='store_true', default=False,
                         help='compute in float16 on the GPU')
    serving.add_argument('-bf16', action='store_true', default=False,
                         help='compute the matmuls in bfloat16 (LayerNorm and softmax stay '
                              'float32); fast on CPUs with AVX512-BF16 or AMX')
    serving.add_argument('-gpu_memory_fraction', type=float, default=0.5,
                         help='fraction of each GPU\'s memory that one worker may use, '
                              'from 0.0 to 1.0')
    serving.add_argument('-device_map', type=int, nargs='+', default=[],
                         help='GPU ids for the workers, reused in turn when there are more '
                              'workers than ids')
    serving.add_argument('-prefetch_size', type=int, default=10,
                         help='batches each GPU worker may hold ahead of the one it computes')
    serving.add_argument('-fixed_embed_length', action='store_true', default=False,
                         help='with -max_seq_len NONE and -pooling_strategy NONE, pad the token '
                              'axis to max_position_embeddings so every reply has the same shape')

    limits = parser.add_argument_group('Limits and security',
                                       'bounds that keep one client from hurting the others')
    limits.add_argument('-ip', type=str, default='*',
                        help='address to bind every port to; * binds all interfaces, so anyone '
                             'who can reach the ports can encode text and stop the server, '
                             'while 127.0.0.1 accepts local clients only')
    limits.add_argument('-max_request_sentences', type=int, default=50_000,
                        help='maximum sentences in one request; larger requests are rejected')
    limits.add_argument('-max_queue_sentences', type=int, default=500_000,
                        help='maximum sentences waiting for a worker; requests beyond it are '
                             'rejected as "server busy"')
    limits.add_argument('-max_msg_mb', type=float, default=200,
                        help='maximum size of one request message in MB; ZeroMQ drops the '
                             'connection of a client that sends more')
    limits.add_argument('-job_timeout', type=float, default=600,
                        help='seconds after which an unfinished request, or a result whose '
                             'client is gone, is dropped')
    limits.add_argument('-drain_timeout', type=float, default=30,
                        help='seconds that SIGTERM, Ctrl-C and TERMINATION wait for requests in '
                             'progress to finish before the processes exit')
    limits.add_argument('-curve_secret_key', type=str, default=None,
                        help='ZeroMQ CURVE secret key file of the server (from '
                             'bert-serving-keygen); encrypts and authenticates both ports')
    limits.add_argument('-curve_allowed_keys', type=str, default=None,
                        help='directory of the public key files of the clients allowed to '
                             'connect; needed with -curve_secret_key')

    parser.add_argument('-verbose', action='store_true', default=False,
                        help='log debug messages, TensorFlow\'s included')
    parser.add_argument('-version', action='version', version='%(prog)s ' + __version__)
    return parser


def get_shutdown_parser():
    parser = argparse.ArgumentParser(
        prog='bert-serving-terminate', description='Stop a running bert-serving server.')
    parser.add_argument('-ip', type=str, default='localhost', help='address of the server')
    parser.add_argument('-port', '-port_in', '-port_data', type=int, required=True,
                        help='request port of the server (its -port)')
    parser.add_argument('-timeout', type=int, default=5000,
                        help='milliseconds to wait for the server to take the command')
    parser.add_argument('-curve_server_key', type=str, default=None,
                        help='public key file of a server that runs with -curve_secret_key')
    parser.add_argument('-curve_client_key', type=str, default=None,
                        help='secret key file of an allowed client, with -curve_server_key')
    return parser


def get_run_args(parser_fn=get_args_parser, printed=True):
    args = parser_fn().parse_args()
    if printed:
        print('arguments:')
        for name, value in sorted(vars(args).items()):
            print('%25s = %s' % (name, value))
    return args


_COMPONENT_COLORS = {'VENTILATOR': 'magenta', 'SINK': 'green', 'WORKER': 'yellow', 'HTTP': 'cyan'}


class _ComponentFormatter(logging.Formatter):
    """Prefix each line with its level and component; the component is colored on a terminal."""

    def __init__(self, context, use_color):
        label = '{:<11}'.format(context)
        color = _COMPONENT_COLORS.get(context.split('-')[0])
        if use_color and color:
            from termcolor import colored
            label = colored(label, color)
        super().__init__('%(levelname)-.1s:' + label + ':[%(filename).3s:%(funcName).4s:'
                         '%(lineno)3d]:%(message)s', datefmt='%m-%d %H:%M:%S')


def set_logger(context, verbose=False):
    """Return the logger of one component (VENTILATOR, SINK, WORKER-0, ...), writing to stderr."""
    logger = logging.getLogger(context)
    logger.setLevel(logging.DEBUG if verbose else logging.INFO)
    logger.propagate = False
    if not logger.handlers:
        handler = logging.StreamHandler(sys.stderr)
        use_color = sys.stderr.isatty() and not os.environ.get('NO_COLOR')
        handler.setFormatter(_ComponentFormatter(context, use_color))
        logger.addHandler(handler)
    return logger
