"""The worker process: one copy of the model on one device, computing pooled embeddings.

A worker connects a DEALER socket to the ventilator and a PUSH socket to the sink. It
reports READY (or FAILED with the reason) once its model is loaded and warmed up, then
takes jobs of padded token ids from the ventilator and pushes each result to the sink:

    ventilator -> worker:  [JOB, client, request id, part, header, input_ids, segment_ids, lengths]
                           [STOP]
    worker -> ventilator:  [READY, json] | [FAILED, message]
                           [DONE, client, request id, part, busy milliseconds]
    worker -> sink:        [RESULT, client, request id, part, array header, array buffer]
                           [ERROR, client, request id, json]

Each DONE returns one unit of credit, and the ventilator sends a worker no more jobs than
it holds credit for, so jobs queue in the ventilator, where they can be prioritised.
"""
import json
import os
import signal
import time

import numpy as np
import zmq

from bert_serving.client.protocol import array_to_frames, encode_header
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


def _build_model(spec, args, device_id, tf, logger):
    from .bert import BertEncoder
    from .model_dir import load_weights
    from .pooling import PoolingConfig, build_embed_function
    from .tokenization import BertTokenizer

    start = time.perf_counter()
    weights = load_weights(spec)
    use_fp16 = args.fp16 and device_id >= 0
    encoder = BertEncoder(spec.config, weights,
                          use_position_embeddings=not args.no_position_embeddings,
                          compute_dtype=tf.float16 if use_fp16 else tf.float32)
    del weights
    tokenizer = BertTokenizer(spec.vocab_file, spec.do_lower_case)
    pooling = PoolingConfig(args.pooling_strategy, args.pooling_layer, args.mask_cls_sep,
                            args.normalize_embeddings, tokenizer.cls_id, tokenizer.sep_id)
    embed = build_embed_function(encoder, pooling, jit_compile=args.xla)

    # One small batch traces the function now instead of on the first request.
    ids = np.array([[tokenizer.cls_id, tokenizer.sep_id]], dtype=np.int32)
    embed(ids, np.zeros_like(ids), np.array([2], dtype=np.int32))
    logger.info('model loaded and warmed up in %.1fs (%s, %d layers, hidden size %d, %s)',
                time.perf_counter() - start, spec.layout, spec.config.num_hidden_layers,
                spec.config.hidden_size, 'float16' if use_fp16 else 'float32')
    return embed


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
        embed = _build_model(spec, args, device_id, tf, logger)
    except Exception as error:
        logger.error('failed to load the model: %s', error, exc_info=args.verbose)
        backend.send_multipart([FAILED, str(error).encode('utf-8')])
        backend.close()
        sink.close()
        context.term()
        return

    credit = max(1, args.prefetch_size if device_id >= 0 else 1)
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
        if frames[0] != JOB or len(frames) != 8:
            logger.error('ignoring a malformed message from the ventilator (%d frames)', len(frames))
            continue
        start = time.perf_counter()
        _run_job(frames[1:], embed, sink, logger)
        busy_ms = 1000 * (time.perf_counter() - start)
        backend.send_multipart([DONE] + frames[1:4] + [b'%.3f' % busy_ms])

    logger.info('terminated')
    backend.close()
    sink.close()
    context.term()


def _run_job(frames, embed, sink, logger):
    client, req_id, part, header, ids_frame, segments_frame, lengths_frame = frames
    try:
        shape = json.loads(header)['shape']
        input_ids = np.frombuffer(ids_frame, dtype=np.int32).reshape(shape)
        segment_ids = np.frombuffer(segments_frame, dtype=np.int32).reshape(shape)
        lengths = np.frombuffer(lengths_frame, dtype=np.int32)
        start = time.perf_counter()
        output = embed(input_ids, segment_ids, lengths).numpy()
        logger.debug('job %s#%s@%s: %s tokens -> %s in %.1f ms', client, req_id, part, shape,
                     output.shape, 1000 * (time.perf_counter() - start))
    except Exception as error:
        logger.error('job %s#%s@%s failed: %s', client, req_id, part, error, exc_info=True)
        sink.send_multipart([ERROR, client, req_id, encode_header(
            {'message': 'the worker failed to encode this request: %s' % error,
             'type': 'server_error'})])
        return
    array_header, buffer = array_to_frames(output)
    sink.send_multipart([RESULT, client, req_id, part, array_header, buffer], copy=False)
