"""The asyncio ZeroMQ client through which the HTTP process reaches the server."""
import asyncio
import contextlib
import json
import uuid

import numpy as np
import zmq
import zmq.asyncio

from bert_serving.client import __version__
from bert_serving.client.protocol import SHOW_STATUS, decode_header, frames_to_array
from .errors import ServerRejection

# Seconds to wait for the reply to an encode request before returning 504.
ENCODE_TIMEOUT_S = 300
# Seconds one SHOW_STATUS request may wait for its reply before a new one is sent.
STATUS_REQUEST_TIMEOUT_S = 30


class AsyncBertClient:
    """A BertClient for asyncio: many requests in flight at once, each awaiting its reply.

    One task reads the SUB socket and resolves the future of each reply's request id.
    """

    def __init__(self, context: zmq.asyncio.Context, ip, port, port_out, logger):
        self.identity = ('HTTP-%s' % uuid.uuid4().hex).encode('ascii')
        self.ip = ip
        self.port = port
        self.port_out = port_out
        self.logger = logger
        self.sender = context.socket(zmq.PUSH)
        self.sender.setsockopt(zmq.LINGER, 0)
        self.sender.connect('tcp://%s:%d' % (ip, port))
        self.receiver = context.socket(zmq.SUB)
        self.receiver.setsockopt(zmq.LINGER, 0)
        self.receiver.setsockopt(zmq.SUBSCRIBE, self.identity)
        self.receiver.connect('tcp://%s:%d' % (ip, port_out))
        self.request_id = 0
        self.pending = {}  # request id -> future of the reply frames
        self._status_task = None
        self._receive_task = None

    def start(self):
        self._receive_task = asyncio.ensure_future(self._receive_loop())

    async def close(self):
        for task in (self._receive_task, self._status_task):
            if task is not None:
                task.cancel()
                with contextlib.suppress(BaseException):
                    await task
        self.sender.close()
        self.receiver.close()

    async def _receive_loop(self):
        while True:
            frames = await self.receiver.recv_multipart()
            try:
                request_id = int(frames[-1])
            except ValueError:
                self.logger.error('ignored a reply whose request id %r is not a number',
                                  frames[-1][:20])
                continue
            future = self.pending.get(request_id)
            if future is not None and not future.done():
                future.set_result(frames)

    async def request(self, payload: bytes, msg_len: int, timeout: float):
        """Send one request and return its reply frames, or raise asyncio.TimeoutError after
        `timeout` seconds."""
        self.request_id += 1
        request_id = self.request_id
        future = asyncio.get_running_loop().create_future()
        self.pending[request_id] = future
        try:
            await self.sender.send_multipart([self.identity, payload, b'%d' % request_id,
                                              b'%d' % msg_len])
            return await asyncio.wait_for(future, timeout)
        finally:
            self.pending.pop(request_id, None)

    async def encode(self, texts, timeout=ENCODE_TIMEOUT_S) -> np.ndarray:
        """Encode validated texts (strings or token lists). Raise ServerRejection for an
        error reply."""
        payload = json.dumps(texts, ensure_ascii=False).encode('utf-8')
        frames = await self.request(payload, len(texts), timeout)
        header = decode_header(frames[1])
        if 'error' in header:
            error = header['error']
            raise ServerRejection(error.get('message', 'no message'),
                                  error.get('type', 'invalid_request'))
        return frames_to_array(header, frames[2])

    async def fetch_status(self, timeout):
        """Return the SHOW_STATUS document. Concurrent callers share one request."""
        if self._status_task is None or self._status_task.done():
            self._status_task = asyncio.ensure_future(
                self.request(SHOW_STATUS, 0, STATUS_REQUEST_TIMEOUT_S))
            # Retrieve the exception of a request that every caller stopped waiting for.
            self._status_task.add_done_callback(
                lambda task: task.cancelled() or task.exception())
        frames = await asyncio.wait_for(asyncio.shield(self._status_task), timeout)
        return decode_header(frames[1])

    @property
    def status(self):
        return {
            'identity': self.identity.decode('ascii'),
            'num_request': self.request_id,
            'num_pending_request': len(self.pending),
            'pending_request': sorted(self.pending),
            'port': self.port,
            'port_out': self.port_out,
            'server_ip': self.ip,
            'client_version': __version__,
            'timeout': ENCODE_TIMEOUT_S * 1000,
        }
