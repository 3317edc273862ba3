"""BertServer: the ventilator thread that starts the sink and the workers and routes requests.

Process layout (all internal sockets are ipc:// files in a private temporary directory):

    clients --PUSH--> [ventilator: PULL on -port] --ROUTER/DEALER--> worker 0..n-1
                              |                                        |
                              +---------PUSH--> [sink: PULL] <--PUSH---+
                                                  | XPUB on -port_out
                                                  v
                                               clients (SUB, topic = client identity)

The ventilator runs in the server's main process and does not import TensorFlow. Each worker
is a separate process with its own TensorFlow runtime and model copy. Workers ask for work
by credit, so queued jobs stay in the ventilator, where small requests can overtake large
ones and where the jobs of a worker that dies can be sent to another.
"""
import json
import multiprocessing
import shutil
import sys
import tempfile
import threading
import time
from datetime import datetime

import zmq

from bert_serving.client import __version__, _use_curve
from bert_serving.client.protocol import COMMANDS, SHOW_STATUS, TERMINATION, encode_header
from .devices import assign_devices, cpu_threads_per_worker, list_available_gpus
from .helper import PoolingStrategy, set_logger
from .model_dir import ModelDirError, inspect_model_dir, resolve_serving_options
from .batching import batch_frames, length_buckets
from .scheduler import JobScheduler
from .security import check_curve_args, secure_server_socket
from .sink import STATS, run_sink
from .tokenization import BertTokenizer
from .ventilator import RequestError, ServerStatistic, parse_payload, plan_request
from .worker import DONE, FAILED, JOB, READY, STOP, run_worker

__all__ = ['__version__', 'BertServer', 'ModelDirError']

POLL_INTERVAL_MS = 100
# Loading and warming up a model takes seconds; this bounds a start-up that hangs.
STARTUP_TIMEOUT_S = 600
# Each job is sent to a new worker at most this many times after its worker died.
MAX_JOB_ATTEMPTS = 2


class BertServer(threading.Thread):
    """The ventilator. `start()` launches the service; `close()` stops every process.

    The constructor checks the model directory and the flags, so a wrong path or an invalid
    flag raises ModelDirError before any process starts.
    """

    def __init__(self, args):
        super().__init__(name='VENTILATOR')
        self.args = args
        self.logger = set_logger('VENTILATOR', args.verbose)
        if args.graph_tmp_dir:
            self.logger.info('-graph_tmp_dir is unused: TensorFlow 2 builds no frozen graph')

        self.spec = inspect_model_dir(args, self.logger)
        resolve_serving_options(args, self.spec, self.logger)
        config = self.spec.config
        self.token_limit = args.max_seq_len or config.max_position_embeddings
        self.tokenizer = BertTokenizer(self.spec.vocab_file, self.spec.do_lower_case,
                                       self.token_limit, args.no_special_token)
        if args.pooling_strategy == PoolingStrategy.NONE:
            self.fixed_out_len = args.max_seq_len or (
                config.max_position_embeddings if args.fixed_embed_length else None)
        else:
            self.fixed_out_len = None

        try:
            check_curve_args(args)
        except ValueError as error:
            raise ModelDirError(str(error)) from None
        self.num_worker = args.num_worker
        if self.num_worker < 1:
            raise ModelDirError('invalid -num_worker %d: at least 1 worker is needed'
                                % self.num_worker)
        self.is_ready = threading.Event()
        self.exit_code = None
        self._stop_requested = threading.Event()
        self.processes = {}
        self.device_map = []
        self.stat = ServerStatistic()
        self.scheduler = JobScheduler(args.max_batch_size, args.max_batch_tokens,
                                      args.coalesce_wait_ms / 1000)
        self.buckets = length_buckets(self.token_limit, coarse=args.xla)
        self.sink_stats = {}
        self.authenticator = None
        self.bind_ip = args.ip
        self.ipc_dir = tempfile.mkdtemp(prefix='bert-serving-')
        self.backend_addr = 'ipc://%s/backend' % self.ipc_dir
        self.sink_addr = 'ipc://%s/sink' % self.ipc_dir
        self.status_args = {k: (str(v) if isinstance(v, PoolingStrategy) else v)
                            for k, v in sorted(vars(args).items())}
        self.status_static = {
            'tensorflow_version': _package_version('tensorflow'),
            'python_version': sys.version,
            'server_version': __version__,
            'pyzmq_version': zmq.pyzmq_version(),
            'zmq_version': zmq.zmq_version(),
            'server_start_time': str(datetime.now()),
            'model_dir': self.spec.model_dir,
            'model_layout': self.spec.layout,
            'embedding_dim': self._embedding_dim(),
        }

    def _embedding_dim(self):
        hidden = self.spec.config.hidden_size
        if self.args.pooling_strategy == PoolingStrategy.CLS_POOLED:
            return hidden
        factor = 2 if self.args.pooling_strategy == PoolingStrategy.REDUCE_MEAN_MAX else 1
        return hidden * len(self.args.pooling_layer) * factor

    def close(self):
        """Stop the ventilator, the sink and the workers, and wait for them to exit."""
        self._stop_requested.set()
        if self.is_alive():
            self.join()

    @staticmethod
    def shutdown(args):
        """Send TERMINATION to the server on `args.ip`:`args.port` (bert-serving-terminate)."""
        with zmq.Context() as context:
            with context.socket(zmq.PUSH) as socket:
                socket.setsockopt(zmq.LINGER, args.timeout)
                socket.setsockopt(zmq.SNDTIMEO, args.timeout)
                if getattr(args, 'curve_server_key', None):
                    with context.socket(zmq.SUB) as unused_receiver:
                        _use_curve(socket, unused_receiver, args.curve_server_key,
                                   args.curve_client_key)
                socket.connect('tcp://%s:%d' % (args.ip, args.port))
                try:
                    socket.send_multipart([b'0', TERMINATION, b'0', b'0'])
                except zmq.error.Again:
                    raise TimeoutError('no server took the shutdown command on %s:%d within '
                                       '%d ms' % (args.ip, args.port, args.timeout)) from None

    def run(self):
        context = zmq.Context()
        try:
            self._run(context)
            self.exit_code = 0
        except (ModelDirError, RuntimeError, zmq.ZMQError) as error:
            self.logger.error('%s', error)
            self.exit_code = 1
        except Exception:
            self.logger.exception('the ventilator failed')
            self.exit_code = 1
        finally:
            self.is_ready.clear()
            self._stop_children(context)
            if self.authenticator is not None:
                self.authenticator.stop()
            context.destroy(linger=0)
            shutil.rmtree(self.ipc_dir, ignore_errors=True)
            self.logger.info('terminated')

    def _run(self, context):
        self.frontend = context.socket(zmq.PULL)
        self.frontend.setsockopt(zmq.LINGER, 0)
        self.frontend.setsockopt(zmq.MAXMSGSIZE, int(self.args.max_msg_mb * 2 ** 20))
        self.authenticator = secure_server_socket(context, self.frontend, self.args, self.logger)
        try:
            self.frontend.bind('tcp://%s:%d' % (self.bind_ip, self.args.port))
        except zmq.ZMQError as error:
            raise RuntimeError('cannot bind the request port %d: %s' % (self.args.port, error))
        self.backend = context.socket(zmq.ROUTER)
        self.backend.setsockopt(zmq.LINGER, 0)
        self.backend.bind(self.backend_addr)
        self.sink = context.socket(zmq.PUSH)
        self.sink.setsockopt(zmq.LINGER, 0)
        self.sink.connect(self.sink_addr)
        self.logger.info('bound the request port %d', self.args.port)

        self._start_children()
        self._wait_until_ready()
        self.is_ready.set()
        self.logger.info('all set, ready to serve requests on ports %d (in) and %d (out)',
                         self.args.port, self.args.port_out)
        self._serve()

    def _spawn(self, name, target, args):
        process = multiprocessing.get_context('spawn').Process(target=target, args=args,
                                                               name=name, daemon=True)
        process.start()
        self.processes[name] = process
        return process

    def _start_children(self):
        self._spawn('SINK', run_sink, (self.args, self.sink_addr, self.backend_addr, self.bind_ip))
        if self.args.http_port:
            self._start_http()
        self.device_map = assign_devices(self.num_worker, self.args.cpu, self.args.device_map,
                                         [] if self.args.cpu else list_available_gpus(self.logger),
                                         self.logger)
        if self.args.fp16 and any(d < 0 for d in self.device_map):
            self.logger.warning('-fp16 applies to GPU workers only; CPU workers compute in '
                                'float32')
        num_cpu_workers = sum(1 for d in self.device_map if d < 0)
        self.cpu_threads = cpu_threads_per_worker(num_cpu_workers)
        for worker_id in range(self.num_worker):
            self._start_worker(worker_id)

    def _start_http(self):
        # Imported here so that a server without -http_port does not load the web stack.
        from .http import run_http
        self._spawn('HTTP', run_http, (self.args, self.backend_addr))

    def _start_worker(self, worker_id):
        device = self.device_map[worker_id]
        self.logger.info('starting WORKER-%d on %s', worker_id,
                         'GPU %d' % device if device >= 0 else 'the CPU')
        self._spawn('WORKER-%d' % worker_id, run_worker,
                    (worker_id, self.spec, self.args, device, self.cpu_threads,
                     self.backend_addr, self.sink_addr))

    def _wait_until_ready(self):
        """Wait for READY from the sink and every worker; raise on FAILED, death or timeout."""
        waiting = set(self.processes)
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while waiting:
            if self._stop_requested.is_set():
                raise RuntimeError('stopped during start-up')
            if time.monotonic() > deadline:
                raise RuntimeError('%s did not start within %ds' % (', '.join(sorted(waiting)),
                                                                   STARTUP_TIMEOUT_S))
            if self.backend.poll(POLL_INTERVAL_MS):
                name, kind, *rest = self.backend.recv_multipart()
                name = name.decode()
                if kind == FAILED:
                    raise RuntimeError('%s failed to start: %s' % (name, rest[0].decode()))
                if kind == READY:
                    waiting.discard(name)
                    self._on_ready(name, rest)
            for name in list(waiting):
                if not self.processes[name].is_alive():
                    raise RuntimeError('%s exited during start-up with code %s'
                                       % (name, self.processes[name].exitcode))

    def _on_ready(self, name, rest):
        if name.startswith('WORKER'):
            self.scheduler.add_worker(name, json.loads(rest[0])['credit'])
            self.logger.info('%s is ready', name)

    def _serve(self):
        poller = zmq.Poller()
        poller.register(self.frontend, zmq.POLLIN)
        poller.register(self.backend, zmq.POLLIN)
        last_check = time.monotonic()
        drain_deadline = None

        while True:
            if self._stop_requested.is_set() and drain_deadline is None:
                drain_deadline = time.monotonic() + self.args.drain_timeout
                self.logger.info('stopping: finishing %d queued and %d running job(s) within '
                                 '%.0fs', self.scheduler.num_queued_jobs,
                                 self.scheduler.num_in_flight_jobs, self.args.drain_timeout)
            if drain_deadline is not None and (self.scheduler.is_idle
                                               or time.monotonic() > drain_deadline):
                break

            events = dict(poller.poll(POLL_INTERVAL_MS))
            if self.backend in events:
                self._on_backend(self.backend.recv_multipart())
            if self.frontend in events:
                if self._on_request(self.frontend.recv_multipart()):
                    self._stop_requested.set()
            self.scheduler.dispatch(self._send_batch)
            if time.monotonic() - last_check > 0.5:
                last_check = time.monotonic()
                self._check_children()

        for job in self.scheduler.take_all():
            self._send_error(job.client, job.req_id, 'the server stopped before this request '
                             'finished', 'server_shutdown')

    def _send_batch(self, name, batch_id, jobs):
        self.backend.send_multipart([name.encode(), JOB] + batch_frames(batch_id, jobs),
                                    copy=False)

    def _on_backend(self, frames):
        name, kind = frames[0].decode(), frames[1]
        if kind == DONE:
            jobs = self.scheduler.complete(name, frames[2])
            if jobs:
                self.stat.record_batch(name, sum(job.num_rows for job in jobs),
                                     float(frames[3]) / 1000)
        elif kind == READY:
            self._on_ready(name, frames[2:])
        elif kind == STATS:
            self.sink_stats = json.loads(frames[2])
        elif kind == FAILED:
            self.logger.error('%s failed: %s', name, frames[2].decode(errors='replace'))

    def _on_request(self, frames):
        """Handle one client message; return True for a TERMINATION request."""
        if len(frames) != 4:
            if len(frames) >= 3 and frames[2].isdigit():
                self._send_error(frames[0], frames[2], 'invalid request: expected 4 frames '
                                 '(identity, payload, request id, length) but got %d'
                                 % len(frames), 'invalid_request')
            self.logger.error('malformed request with %d frames instead of 4 (identity, '
                              'payload, request id, length)', len(frames))
            return False
        client, payload, req_id, msg_len = frames
        if not req_id.isdigit():
            self.logger.error('dropped a request from %r whose request id %r is not a number',
                              client[:40], req_id[:20])
            return False

        is_command = payload in COMMANDS
        self.stat.update(client, is_command, int(msg_len) if msg_len.isdigit() else 0)
        if payload == TERMINATION:
            self.logger.info('received TERMINATION from %r', client[:40])
            return True
        if is_command:
            self._send_status(client, req_id, payload == SHOW_STATUS)
            return False

        try:
            if self._stop_requested.is_set():
                raise RequestError('the server is shutting down and accepts no new requests',
                                   'server_shutdown')
            if not msg_len.isdigit():
                raise RequestError('invalid request: the length frame %r is not a number'
                                   % msg_len[:20])
            self._check_capacity(int(msg_len))
            texts, is_tokenized = parse_payload(payload, int(msg_len))
            jobs, register = plan_request(client, req_id, texts, is_tokenized, self.tokenizer,
                                          self.args.max_batch_size, self.args.max_batch_tokens,
                                          self.buckets, self.args.show_tokens_to_client,
                                          self.fixed_out_len)
        except RequestError as error:
            self.logger.warning('rejected request %s from %r: %s', req_id.decode(), client[:40],
                                error)
            self._send_error(client, req_id, str(error), error.error_type)
            return False

        self.logger.info('new encode request\treq id: %s\tsize: %d\tclient: %s',
                         req_id.decode(), len(texts), client.decode(errors='replace'))
        self.sink.send_multipart([b'REGISTER', client, req_id, json.dumps(register).encode()])
        self.scheduler.submit(jobs, high_priority=len(texts) < self.args.priority_batch_size)
        return False

    def _check_capacity(self, num_sentences):
        """Raise RequestError for a request too large to take, or when the queue is full."""
        if num_sentences > self.args.max_request_sentences:
            raise RequestError('invalid request: %d sentences is more than the maximum of %d per '
                               'request; split it into smaller requests, or start the server '
                               'with a larger -max_request_sentences'
                               % (num_sentences, self.args.max_request_sentences))
        queued = self.scheduler.queued_sentences
        if queued + num_sentences > self.args.max_queue_sentences:
            raise RequestError('server busy: %d sentences are already waiting (maximum %d); '
                               'retry later' % (queued, self.args.max_queue_sentences),
                               'server_busy')

    def _send_error(self, client, req_id, message, error_type):
        self.sink.send_multipart([b'ERROR', client, req_id,
                                  encode_header({'message': message, 'type': error_type})])

    def _send_status(self, client, req_id, with_statistic):
        runtime = {
            'client': client.decode(errors='replace'),
            'num_process': len(self.processes),
            'ventilator -> worker': [self.backend_addr],
            'worker -> sink': self.sink_addr,
            'ventilator <-> sink': self.sink_addr,
            'server_current_time': str(datetime.now()),
            'device_map': self.device_map,
            'num_concurrent_socket': 1,
            'num_ready_worker': len(self.scheduler.ready_workers),
            'num_queued_job': self.scheduler.num_queued_jobs,
            'num_queued_sentence': self.scheduler.queued_sentences,
            'num_in_flight_job': self.scheduler.num_in_flight_jobs,
            'process_pids': {name: p.pid for name, p in self.processes.items()},
            'sink': self.sink_stats,
            'vocab_file': self.spec.vocab_file,
            'do_lower_case': self.spec.do_lower_case,
        }
        if with_statistic:
            runtime['statistic'] = self.stat.value
            runtime['workers'] = self.stat.workers
            runtime['batch_size_histogram'] = self.stat.batch_sizes
        document = {**runtime, **self.status_args, **self.status_static}
        self.sink.send_multipart([b'CONFIG', client, req_id, encode_header(document)])

    def _check_children(self):
        for name, process in list(self.processes.items()):
            if process.is_alive():
                continue
            if name == 'SINK':
                raise RuntimeError('the sink exited with code %s' % process.exitcode)
            self.logger.error('%s exited unexpectedly with code %s; starting a new one',
                              name, process.exitcode)
            if name == 'HTTP':
                self._start_http()
            else:
                self._requeue_jobs(self.scheduler.remove_worker(name))
                self._start_worker(int(name.split('-')[1]))

    def _requeue_jobs(self, jobs):
        for job in jobs:
            job.attempts += 1
            if job.attempts >= MAX_JOB_ATTEMPTS:
                self._send_error(job.client, job.req_id,
                                 'a worker died while encoding this request, twice; the request '
                                 'may be too large for the worker\'s memory', 'server_error')
            else:
                self.scheduler.resubmit_first(job)

    def _stop_children(self, context):
        """Ask every child to stop, then terminate those still running after a grace period."""
        backend = getattr(self, 'backend', None)
        sink = getattr(self, 'sink', None)
        try:
            if backend is not None:
                for name in self.processes:
                    if name != 'SINK':
                        backend.send_multipart([name.encode(), STOP], zmq.NOBLOCK)
            if sink is not None:
                sink.send_multipart([STOP], zmq.NOBLOCK)
        except zmq.ZMQError:
            pass
        deadline = time.monotonic() + 10
        for name, process in self.processes.items():
            process.join(max(0.1, deadline - time.monotonic()))
            if process.is_alive():
                self.logger.warning('%s did not stop in time, terminating it', name)
                process.terminate()
                process.join(5)
            if process.is_alive():
                process.kill()
                process.join()


def _package_version(name):
    from importlib.metadata import PackageNotFoundError, version
    for candidate in (name, name + '-cpu'):
        try:
            return version(candidate)
        except PackageNotFoundError:
            continue
    return 'unknown'

