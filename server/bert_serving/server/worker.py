"""The worker process: one copy of the model on one device, computing pooled embeddings.

A worker connects a DEALER socket to the ventilator and a PUSH socket to the sink. It
reports READY (or FAILED with the reason) once its model is loaded and warmed up, then
takes jobs of padded token ids from the ventilator and pushes each result to the sink:

    ventilator -> worker:  [JOB, batch frames (see `batching`)] | [STOP]
    worker -> ventilator:  [READY, json] | [FAILED, message] | [DONE, batch id, busy milliseconds]
    worker -> sink:        [RESULT, client, request id, part, array header, array buffer]
                           [ERROR, client, request id, json]

A batch may contain jobs of several requests. The worker runs it as one forward pass and
sends each job's rows to the sink on its own. Each DONE returns one unit of credit, and the
ventilator sends a worker no more batches than it holds credit for, so jobs queue in the
ventilator, where they can be prioritised and merged.
"""
import json
import os
import signal
import time

import numpy as np
import zmq

from bert_serving.client.protocol import array_to_frames, encode_header
from .batching import batch_size_buckets, bucket_length, length_buckets, parse_batch_frames
from .helper import set_logger
from .process import die_with_parent, parent_is_alive

JOB, STOP, READY, FAILED, DONE = b'JOB', b'STOP', b'READY', b'FAILED', b'DONE'
RESULT, ERROR = b'RESULT', b'ERROR'

POLL_INTERVAL_MS = 200


def _configure_device(worker_id, device_id, num_cpu_threads, args, logger):
    """Pin the worker to its GPU (or hide all GPUs) and size the CPU thread pools.

    Must run before TensorFlow initialises its devices.
    """
    os.environ['CUDA_VISIBLE_DEVICES'] = str(device_id) if device_id >= 0 else '-1'
    os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '0' if args.verbose else '3')
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(num_cpu_threads)
    tf.config.threading.set_inter_op_parallelism_threads(1 if device_id < 0 else 2)
    if device_id >= 0:
        for gpu in tf.config.list_physical_devices('GPU'):
            total_mb = _gpu_total_memory_mb(device_id)
            if total_mb and 0 < args.gpu_memory_fraction < 1:
                limit = int(total_mb * args.gpu_memory_fraction)
                tf.config.set_logical_device_configuration(
                    gpu, [tf.config.LogicalDeviceConfiguration(memory_limit=limit)])
                logger.info('limiting GPU memory to %d MB (%.0f%%)', limit,
                            100 * args.gpu_memory_fraction)
            else:
                tf.config.experimental.set_memory_growth(gpu, True)
    return tf


def _gpu_total_memory_mb(device_id):
    try:
        import GPUtil
        for gpu in GPUtil.getGPUs():
            if gpu.id == device_id:
                return gpu.memoryTotal
    except Exception:  # GPUtil needs nvidia-smi and distutils; neither is essential here
        return None
    return None


class Embedder:
    """The worker's compiled forward pass, with the padding and warm-up that XLA needs.

    With -xla every distinct input shape is a separate compilation, so batches are padded
    to bucketed sizes and every bucket is compiled before the worker reports READY.
    """

    def __init__(self, spec, args, device_id, tf, logger):
        from .bert import BertEncoder
        from .model_dir import load_weights
        from .pooling import PoolingConfig, build_embed_function
        from .tokenization import BertTokenizer

        start = time.perf_counter()
        self.logger = logger
        weights = load_weights(spec)
        if args.fp16 and device_id >= 0:
            self.dtype_name, compute_dtype = 'float16', tf.float16
        elif args.bf16:
            self.dtype_name, compute_dtype = 'bfloat16', tf.bfloat16
        else:
            self.dtype_name, compute_dtype = 'float32', tf.float32
        encoder = BertEncoder(spec.config, weights,
                              use_position_embeddings=not args.no_position_embeddings,
                              compute_dtype=compute_dtype)
        del weights
        tokenizer = BertTokenizer(spec.vocab_file, spec.do_lower_case)
        pooling = PoolingConfig(args.pooling_strategy, args.pooling_layer, args.mask_cls_sep,
                                args.normalize_embeddings, tokenizer.cls_id, tokenizer.sep_id)
        self.embed = build_embed_function(encoder, pooling, jit_compile=args.xla)
        self.xla = args.xla
        token_limit = args.max_seq_len or spec.config.max_position_embeddings
        self.batch_buckets = batch_size_buckets(args.max_batch_size)
        self.warmed = set()

        if self.xla:
            # Twice the token budget, because padding rows to a bucket can double a batch.
            shapes = [(b, l) for l in length_buckets(token_limit, coarse=True)
                      for b in self.batch_buckets if b == 1 or b * l <= 2 * args.max_batch_tokens]
        else:
            # One small batch traces the function now instead of on the first request.
            shapes = [(1, 2)]
        compile_start = time.perf_counter()
        for rows, width in shapes:
            ids = np.zeros((rows, width), dtype=np.int32)
            self.embed(ids, ids, np.full(rows, width, dtype=np.int32))
            self.warmed.add((rows, width))
        if self.xla:
            logger.info('XLA compiled %d batch shapes in %.1fs', len(shapes),
                        time.perf_counter() - compile_start)
        logger.info('model loaded and warmed up in %.1fs (%s, %d layers, hidden size %d, %s)',
                    time.perf_counter() - start, spec.layout, spec.config.num_hidden_layers,
                    spec.config.hidden_size, self.dtype_name)

    def __call__(self, input_ids, segment_ids, lengths):
        """Return the pooled float32 output for a batch, unpadded to its real rows."""
        rows = len(lengths)
        if self.xla:
            padded_rows = bucket_length(rows, self.batch_buckets)
            if padded_rows > rows:
                extra = padded_rows - rows
                input_ids = np.concatenate([input_ids, np.zeros((extra, input_ids.shape[1]),
                                                                dtype=np.int32)])
                segment_ids = np.concatenate([segment_ids, np.zeros_like(input_ids[rows:])])
                lengths = np.concatenate([lengths, np.ones(extra, dtype=np.int32)])
            if (padded_rows, input_ids.shape[1]) not in self.warmed:
                self.logger.warning('XLA is compiling an unexpected batch shape %s',
                                    (padded_rows, input_ids.shape[1]))
                self.warmed.add((padded_rows, input_ids.shape[1]))
        output = self.embed(input_ids, segment_ids, lengths).numpy()
        return output[:rows]


def run_worker(worker_id, spec, args, device_id, num_cpu_threads, backend_addr, sink_addr):
    """Entry point of a worker process."""
    die_with_parent()
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    name = 'WORKER-%d' % worker_id
    logger = set_logger(name, args.verbose)

    context = zmq.Context()
    backend = context.socket(zmq.DEALER)
    backend.setsockopt(zmq.IDENTITY, name.encode('ascii'))
    backend.setsockopt(zmq.LINGER, 1000)
    backend.connect(backend_addr)
    sink = context.socket(zmq.PUSH)
    sink.setsockopt(zmq.LINGER, 5000)
    sink.connect(sink_addr)

    try:
        tf = _configure_device(worker_id, device_id, num_cpu_threads, args, logger)
        logger.info('using %s with %d CPU thread(s)',
                    'GPU %d' % device_id if device_id >= 0 else 'the CPU', num_cpu_threads)
        embed = Embedder(spec, args, device_id, tf, logger)
    except Exception as error:
        logger.error('failed to load the model: %s', error, exc_info=args.verbose)
        backend.send_multipart([FAILED, str(error).encode('utf-8')])
        backend.close()
        sink.close()
        context.term()
        return

    # A CPU worker keeps one batch queued ahead, so that it never idles while the ventilator
    # processes its DONE. More would keep queued jobs from merging and small requests from
    # overtaking. GPU workers queue -prefetch_size batches, as in 1.10.0.
    credit = max(1, args.prefetch_size if device_id >= 0 else 2)
    backend.send_multipart([READY, json.dumps({'credit': credit, 'device': device_id}).encode()])
    logger.info('ready and listening')

    poller = zmq.Poller()
    poller.register(backend, zmq.POLLIN)
    while True:
        if not poller.poll(POLL_INTERVAL_MS):
            if not parent_is_alive():
                logger.warning('the server process is gone, so exiting')
                break
            continue
        frames = backend.recv_multipart()
        if frames[0] == STOP:
            break
        if frames[0] != JOB or len(frames) < 10:
            logger.error('ignoring a malformed message from the ventilator (%d frames)', len(frames))
            continue
        start = time.perf_counter()
        _run_batch(frames[1:], embed, sink, logger)
        busy_ms = 1000 * (time.perf_counter() - start)
        backend.send_multipart([DONE, frames[1], b'%.3f' % busy_ms])

    logger.info('terminated')
    backend.close()
    sink.close()
    context.term()


def _run_batch(frames, embed, sink, logger):
    """Encode one batch and push each job's rows to the sink, or an error for each job."""
    segments = []
    try:
        batch_id, input_ids, segment_ids, lengths, segments = parse_batch_frames(frames)
        start = time.perf_counter()
        output = embed(input_ids, segment_ids, lengths)
        logger.debug('batch %s: %d job(s), %s tokens -> %s in %.1f ms', batch_id, len(segments),
                     input_ids.shape, output.shape, 1000 * (time.perf_counter() - start))
    except Exception as error:
        logger.error('batch of %d job(s) failed: %s', len(segments), error, exc_info=True)
        for client, req_id, _, _ in segments:
            sink.send_multipart([ERROR, client, req_id, encode_header(
                {'message': 'the worker failed to encode this request: %s' % error,
                 'type': 'server_error'})])
        return

    row = 0
    for client, req_id, part, num_rows in segments:
        array_header, buffer = array_to_frames(output[row:row + num_rows])
        sink.send_multipart([RESULT, client, req_id, part, array_header, buffer], copy=False)
        row += num_rows
