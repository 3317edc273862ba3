"""The sink process: collect the parts of each request, restore its order, publish the result.

The sink binds a PULL socket that the ventilator and every worker push to, and an XPUB
socket on `-port_out` that clients subscribe to with their identity. Messages it takes:

    [REGISTER, client, request id, json]   from the ventilator, before the request's jobs
    [CONFIG, client, request id, json]     a SHOW_CONFIG / SHOW_STATUS reply to publish
    [ERROR, client, request id, json]      the request failed; publish the error
    [RESULT, client, request id, part, array header, array buffer]    from a worker
    [STOP]                                 from the ventilator at shutdown

XPUB (rather than PUB) lets the sink see each client's subscription arrive. A reply for a
client whose subscription has not arrived yet is held back until it does (for at most
`SUBSCRIPTION_WAIT_S`) instead of being dropped, which is what plain PUB does to a client
that connected a moment too late.
"""
import json
import signal
import time
from collections import defaultdict

import numpy as np
import zmq

from bert_serving.client.protocol import array_to_frames, error_header
from .helper import set_logger
from .process import die_with_parent, parent_is_alive
from .security import secure_server_socket

REGISTER, CONFIG, ERROR, RESULT, STOP = b'REGISTER', b'CONFIG', b'ERROR', b'RESULT', b'STOP'
READY, FAILED, STATS = b'READY', b'FAILED', b'STATS'

POLL_INTERVAL_MS = 200
SUBSCRIPTION_WAIT_S = 10.0
STATS_INTERVAL_S = 1.0


class SinkJob:
    """The parts of one request collected so far."""

    def __init__(self):
        self.info = None  # the REGISTER document, once it arrives
        self.parts = {}
        self.last_update = time.monotonic()

    def add_part(self, index, array):
        self.parts[index] = array
        self.last_update = time.monotonic()

    @property
    def is_done(self):
        return self.info is not None and len(self.parts) == self.info['num_parts']

    def assemble(self):
        """Concatenate the parts and undo the ventilator's length sorting.

        Returns:
            float32 array of shape [num_rows, dim], or [num_rows, out_len, dim] for
            token-level (NONE) pooling, with padded positions set to zero.
        """
        parts = [self.parts[i] for i in range(self.info['num_parts'])]
        out_len = self.info.get('out_len')
        if parts[0].ndim == 3:
            # Jobs are padded to bucket lengths, which may pass the request's own length.
            parts = [p[:, :out_len] for p in parts]
            parts = [np.pad(p, ((0, 0), (0, out_len - p.shape[1]), (0, 0))) for p in parts]
        stacked = np.concatenate(parts, axis=0) if len(parts) > 1 else parts[0]
        order = self.info.get('order')
        if order is None:
            return stacked
        result = np.empty_like(stacked)
        result[np.asarray(order)] = stacked
        return result


def run_sink(args, sink_addr, backend_addr, bind_ip):
    """Entry point of the sink process."""
    die_with_parent()
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    logger = set_logger('SINK', args.verbose)

    context = zmq.Context()
    control = context.socket(zmq.DEALER)
    control.setsockopt(zmq.IDENTITY, b'SINK')
    control.setsockopt(zmq.LINGER, 1000)
    control.connect(backend_addr)

    receiver = context.socket(zmq.PULL)
    publisher = context.socket(zmq.XPUB)
    publisher.setsockopt(zmq.LINGER, 0)
    authenticator = secure_server_socket(context, publisher, args, logger)
    try:
        receiver.bind(sink_addr)
        publisher.bind('tcp://%s:%d' % (bind_ip, args.port_out))
    except zmq.ZMQError as error:
        message = 'cannot bind the result port %d: %s' % (args.port_out, error)
        logger.error(message)
        control.send_multipart([FAILED, message.encode('utf-8')])
        for sock in (control, receiver, publisher):
            sock.close()
        context.term()
        return

    sink = _Sink(publisher, logger, args.job_timeout)
    control.send_multipart([READY, b'{}'])
    logger.info('ready, publishing results on port %d', args.port_out)

    poller = zmq.Poller()
    poller.register(receiver, zmq.POLLIN)
    poller.register(publisher, zmq.POLLIN)
    last_sweep = time.monotonic()
    while True:
        events = dict(poller.poll(POLL_INTERVAL_MS))
        if publisher in events:
            sink.on_subscription(publisher.recv())
        if receiver in events:
            frames = receiver.recv_multipart(copy=False)
            if frames[0].bytes == STOP:
                _publish_remaining(sink, receiver, publisher)
                break
            sink.on_message(frames)
        if time.monotonic() - last_sweep > STATS_INTERVAL_S:
            last_sweep = time.monotonic()
            sink.sweep()
            control.send_multipart([STATS, json.dumps(sink.stats).encode()])
            if not parent_is_alive():
                logger.warning('the server process is gone, so exiting')
                break

    logger.info('terminated')
    if authenticator is not None:
        authenticator.stop()
    for sock in (control, receiver, publisher):
        sock.close()
    context.term()


def _publish_remaining(sink, receiver, publisher):
    """Handle the messages that arrived before STOP, so finished results still go out."""
    while receiver.poll(0):
        sink.on_message(receiver.recv_multipart(copy=False))
    while publisher.poll(0):
        sink.on_subscription(publisher.recv())


class _Sink:
    def __init__(self, publisher, logger, job_timeout):
        self.publisher = publisher
        self.logger = logger
        # A request whose parts stop arriving for this long is dropped, so that the parts
        # of a request that can never complete do not pile up.
        self.job_timeout = job_timeout
        self.num_dropped_reply = 0
        self.num_dropped_job = 0
        self.num_sent_reply = 0
        self.jobs = defaultdict(SinkJob)  # (client, request id) -> SinkJob
        self.subscribed = set()
        self.held = defaultdict(list)  # client -> [(deadline, frames)] awaiting subscription
        self.failed = {}  # (client, request id) -> time its error was published

    def on_subscription(self, message):
        if not message:
            return
        topic = message[1:]
        if message[0] == 1:
            self.subscribed.add(topic)
            for _, frames in self.held.pop(topic, []):
                self.publisher.send_multipart(frames, copy=False)
                self.num_sent_reply += 1
        elif message[0] == 0:
            self.subscribed.discard(topic)

    @property
    def stats(self):
        return {'num_pending_job': len(self.jobs),
                'num_held_reply': sum(len(v) for v in self.held.values()),
                'num_sent_reply': self.num_sent_reply,
                'num_dropped_reply': self.num_dropped_reply,
                'num_dropped_job': self.num_dropped_job}

    def publish(self, frames):
        client = frames[0]
        if client in self.subscribed:
            self.publisher.send_multipart(frames, copy=False)
            self.num_sent_reply += 1
        else:
            self.held[client].append((time.monotonic() + SUBSCRIPTION_WAIT_S, frames))

    def on_message(self, frames):
        kind = frames[0].bytes
        try:
            if kind == RESULT:
                client, req_id, part = (f.bytes for f in frames[1:4])
                header = json.loads(frames[4].bytes)
                array = np.frombuffer(frames[5].buffer, dtype=header['dtype']).reshape(
                    header['shape'])
                if (client, req_id) in self.failed:
                    return
                job = self.jobs[(client, req_id)]
                job.add_part(int(part), array)
                self._finish_if_done(client, req_id, job)
            elif kind == REGISTER:
                client, req_id = frames[1].bytes, frames[2].bytes
                if (client, req_id) in self.failed:
                    return
                job = self.jobs[(client, req_id)]
                job.info = json.loads(frames[3].bytes)
                self._finish_if_done(client, req_id, job)
            elif kind == CONFIG:
                client, req_id, document = (f.bytes for f in frames[1:4])
                self.publish([client, document, req_id])
            elif kind == ERROR:
                client, req_id, document = (f.bytes for f in frames[1:4])
                self.jobs.pop((client, req_id), None)
                if (client, req_id) in self.failed:
                    return  # another part of this request already reported its failure
                self.failed[(client, req_id)] = time.monotonic()
                error = json.loads(document)
                self.logger.warning('request %s#%s failed: %s', client.decode(errors='replace'),
                                    req_id.decode(errors='replace'), error['message'])
                self.publish([client, error_header(error['message'], error['type']), b'', req_id])
            else:
                self.logger.error('ignoring a message of unknown kind %r', kind[:20])
        except (ValueError, KeyError, IndexError) as error:
            self.logger.error('ignoring a malformed %r message: %s', kind[:20], error)

    def _finish_if_done(self, client, req_id, job):
        if not job.is_done:
            return
        del self.jobs[(client, req_id)]
        result = job.assemble()
        header, buffer = array_to_frames(result, job.info.get('tokens') or '')
        self.publish([client, header, buffer, req_id])
        self.logger.info('sent %s back to %s#%s', 'x'.join(map(str, result.shape)),
                         client.decode(errors='replace'), req_id.decode(errors='replace'))

    def sweep(self):
        """Drop held replies whose client never subscribed, and requests gone stale."""
        now = time.monotonic()
        for client in list(self.held):
            kept = [(deadline, f) for deadline, f in self.held[client] if deadline > now]
            if len(kept) < len(self.held[client]):
                self.num_dropped_reply += len(self.held[client]) - len(kept)
                self.logger.warning('dropped %d reply(ies) for client %s, which did not '
                                    'subscribe within %.0fs', len(self.held[client]) - len(kept),
                                    client.decode(errors='replace'), SUBSCRIPTION_WAIT_S)
            if kept:
                self.held[client] = kept
            else:
                del self.held[client]
        for key in [k for k, job in self.jobs.items()
                    if now - job.last_update > self.job_timeout]:
            self.logger.warning('dropped the unfinished request %s#%s after %.0fs without progress',
                                key[0].decode(errors='replace'), key[1].decode(errors='replace'),
                                self.job_timeout)
            del self.jobs[key]
            self.num_dropped_job += 1
        for key in [k for k, failed_at in self.failed.items()
                    if now - failed_at > self.job_timeout]:
            del self.failed[key]

