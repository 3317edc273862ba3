"""BertClient: send sentences to a bert-serving server over ZeroMQ and get their vectors back.

The client needs only pyzmq and numpy. It speaks the bert-as-service 1.10.0 protocol (see
`bert_serving.client.protocol`), so it keeps that package's API: blocking `encode`,
non-blocking `encode(blocking=False)` with `fetch` / `fetch_all`, `encode_async`,
`server_config` and `server_status`. Two things differ on purpose: the default timeout is
finite, and an error reported by the server is raised as `BertRequestError` instead of
leaving the caller waiting.
"""
import os
import queue
import threading
import time
import uuid
import warnings
from collections import namedtuple
from functools import wraps

import numpy as np
import zmq

from .protocol import SHOW_CONFIG, SHOW_STATUS, decode_header, encode_header, frames_to_array

__version__ = '2.0.0'

__all__ = ['__version__', 'BertClient', 'ConcurrentBertClient', 'BertRequestError']

DEFAULT_TIMEOUT_MS = 60_000

_Response = namedtuple('_Response', ['id', 'content'])
Response = namedtuple('Response', ['id', 'embedding', 'tokens'])


class BertRequestError(ValueError):
    """An error the server sent back for one request, such as invalid input."""

    def __init__(self, message, error_type='invalid_request', request_id=None):
        super().__init__(message)
        self.error_type = error_type
        self.request_id = request_id


def _short_repr(value, limit=60):
    text = repr(value)
    return text if len(text) <= limit else text[:limit - 3] + '...'


def _use_curve(sender, receiver, server_key_file, client_key_file):
    """Turn on CURVE encryption on both client sockets; must run before they connect."""
    import zmq.auth

    if not (server_key_file and client_key_file):
        raise ValueError('CURVE needs both curve_server_key and curve_client_key')
    server_public, _ = zmq.auth.load_certificate(server_key_file)
    client_public, client_secret = zmq.auth.load_certificate(client_key_file)
    if client_secret is None:
        raise ValueError('%s contains no secret key; pass the .key_secret file' % client_key_file)
    for sock in (sender, receiver):
        sock.curve_serverkey = server_public
        sock.curve_publickey = client_public
        sock.curve_secretkey = client_secret


class BertClient:
    """A connection to one bert-serving server.

    Args:
        ip: the server's address.
        port: the server's request port (`-port` of `bert-serving-start`).
        port_out: the server's result port (`-port_out`).
        output_fmt: 'ndarray' for a float32 numpy array, or 'list' for nested Python lists.
        show_server_config: print the server's configuration after connecting.
        identity: bytes or str that names this client on the wire; a random UUID by default.
        check_version: raise if the server's version differs from this client's.
        check_length: warn when a sentence looks longer than the server's `max_seq_len`.
        check_token_info: ask the server whether it can return tokens (`show_tokens`).
        ignore_all_checks: skip the start-up round trip behind all checks above.
        timeout: milliseconds to wait for a reply (or for room to send) before raising
            TimeoutError; -1 waits forever. Raise it for requests of many thousands of
            sentences.
        curve_server_key: path of the server's public key file, for a server started with
            -curve_secret_key; requires `curve_client_key`.
        curve_client_key: path of this client's secret key file (.key_secret), whose public
            key the server lists in -curve_allowed_keys.
    """

    def __init__(self, ip='localhost', port=5555, port_out=5556, output_fmt='ndarray',
                 show_server_config=False, identity=None, check_version=True,
                 check_length=True, check_token_info=True, ignore_all_checks=False,
                 timeout=DEFAULT_TIMEOUT_MS, curve_server_key=None, curve_client_key=None):
        if output_fmt == 'ndarray':
            self.formatter = lambda x: x
        elif output_fmt == 'list':
            self.formatter = lambda x: x.tolist()
        else:
            raise ValueError('invalid output_fmt %r: use "ndarray" or "list"' % (output_fmt,))

        if identity is None:
            identity = str(uuid.uuid4())
        self.identity = identity.encode('ascii') if isinstance(identity, str) else bytes(identity)

        self.context = zmq.Context()
        self.sender = self.context.socket(zmq.PUSH)
        self.sender.setsockopt(zmq.LINGER, 0)
        self.sender.setsockopt(zmq.SNDTIMEO, timeout)
        self.receiver = self.context.socket(zmq.SUB)
        self.receiver.setsockopt(zmq.LINGER, 0)
        if curve_server_key or curve_client_key:
            _use_curve(self.sender, self.receiver, curve_server_key, curve_client_key)
        self.sender.connect('tcp://%s:%d' % (ip, port))
        self.receiver.setsockopt(zmq.SUBSCRIBE, self.identity)
        self.receiver.connect('tcp://%s:%d' % (ip, port_out))

        self.request_id = 0
        self.timeout = timeout
        self.pending_request = set()
        self.pending_response = {}
        self.output_fmt = output_fmt
        self.port = port
        self.port_out = port_out
        self.ip = ip
        self.length_limit = 0
        self.token_info_available = False
        self.max_msg_bytes = None
        self._pid = os.getpid()
        self._closed = False

        if not ignore_all_checks and (check_version or show_server_config
                                      or check_length or check_token_info):
            self._check_server(check_version, show_server_config, check_length,
                               check_token_info)

    def _check_server(self, check_version, show_server_config, check_length, check_token_info):
        config = self.server_config
        if check_version and config['server_version'] != __version__:
            self.close()
            raise AttributeError(
                'version mismatch: server %s:%d runs version %s but this client is %s; '
                'install the same version of bert-serving on both sides, or pass '
                'check_version=False' % (self.ip, self.port, config['server_version'],
                                         __version__))
        if check_length:
            max_seq_len = config.get('max_seq_len')
            self.length_limit = int(max_seq_len) if max_seq_len is not None else None
        if check_token_info:
            self.token_info_available = bool(config.get('show_tokens_to_client'))
        if config.get('max_msg_mb'):
            self.max_msg_bytes = int(config['max_msg_mb'] * 2 ** 20)
        if show_server_config:
            self._print_dict(config, 'server config:')

    def close(self):
        """Close both sockets; the client cannot be used afterwards."""
        if self._closed:
            return
        self._closed = True
        if os.getpid() != self._pid:
            # The context belongs to the parent process, so terminating it here could block.
            return
        self.sender.close()
        self.receiver.close()
        self.context.term()

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc_val, exc_tb):
        self.close()

    def _check_usable(self):
        if self._closed:
            raise RuntimeError('this BertClient is closed; create a new one')
        if os.getpid() != self._pid:
            raise RuntimeError(
                'this BertClient was created in process %d and cannot be used in process %d '
                'after fork because ZeroMQ sockets do not survive a fork; create a new '
                'BertClient in the child process' % (self._pid, os.getpid()))

    def _send(self, msg, msg_len=0):
        self._check_usable()
        self.request_id += 1
        self.sender.send_multipart([self.identity, msg, b'%d' % self.request_id, b'%d' % msg_len])
        self.pending_request.add(self.request_id)
        return self.request_id

    def _recv(self, wait_for_req_id=None):
        try:
            while True:
                if wait_for_req_id in self.pending_response:
                    response = self.pending_response.pop(wait_for_req_id)
                    return _Response(wait_for_req_id, response)

                response = self.receiver.recv_multipart()
                request_id = int(response[-1])

                if not wait_for_req_id or wait_for_req_id == request_id:
                    self.pending_request.discard(request_id)
                    return _Response(request_id, response)
                self.pending_response[request_id] = response
        finally:
            self.pending_request.discard(wait_for_req_id)

    def _recv_ndarray(self, wait_for_req_id=None):
        request_id, response = self._recv(wait_for_req_id)
        header = decode_header(response[1])
        if 'error' in header:
            error = header['error']
            raise BertRequestError('server %s:%d rejected request %d: %s'
                                   % (self.ip, self.port, request_id, error.get('message')),
                                   error.get('type', 'invalid_request'), request_id)
        array = frames_to_array(header, response[2])
        return Response(request_id, self.formatter(array), header.get('tokens', ''))

    @property
    def status(self):
        """The client's own state: identity, request counts, ports and version."""
        return {
            'identity': self.identity,
            'num_request': self.request_id,
            'num_pending_request': len(self.pending_request),
            'pending_request': self.pending_request,
            'output_fmt': self.output_fmt,
            'port': self.port,
            'port_out': self.port_out,
            'server_ip': self.ip,
            'client_version': __version__,
            'timeout': self.timeout,
        }

    def _timeout(func):
        """Apply the client's timeout to the receive calls inside `func`."""

        @wraps(func)
        def arg_wrapper(self, *args, **kwargs):
            if 'blocking' in kwargs and not kwargs['blocking']:
                # Nothing is received in a non-blocking call, so no timeout applies.
                self.receiver.setsockopt(zmq.RCVTIMEO, -1)
            else:
                self.receiver.setsockopt(zmq.RCVTIMEO, self.timeout)
            try:
                return func(self, *args, **kwargs)
            except zmq.error.Again as error:
                raise TimeoutError(
                    'no reply from the server within %d ms (requests to tcp://%s:%d, results '
                    'from tcp://%s:%d): check that the server is running and that "port" and '
                    '"port_out" match its -port and -port_out; for large requests pass a '
                    'larger timeout to BertClient' % (self.timeout, self.ip, self.port,
                                                     self.ip, self.port_out)) from error
            finally:
                if not self._closed and os.getpid() == self._pid:
                    self.receiver.setsockopt(zmq.RCVTIMEO, -1)

        return arg_wrapper

    @property
    @_timeout
    def server_config(self):
        """The server's configuration: its flags, versions and process layout."""
        req_id = self._send(SHOW_CONFIG)
        return decode_header(self._recv(req_id).content[1])

    @property
    @_timeout
    def server_status(self):
        """The server's configuration plus request statistics under 'statistic'."""
        req_id = self._send(SHOW_STATUS)
        return decode_header(self._recv(req_id).content[1])

    @_timeout
    def encode(self, texts, blocking=True, is_tokenized=False, show_tokens=False):
        """Encode a list of sentences into a float32 array with one row per sentence.

        Args:
            texts: a list of non-empty strings, or with `is_tokenized=True` a list of
                non-empty lists of token strings. A string 'A ||| B' is encoded as the
                sentence pair (A, B).
            blocking: wait for the result; with False, send the request and return None,
                then collect results with `fetch` or `fetch_all`.
            is_tokenized: `texts` contains token lists rather than strings.
            show_tokens: also return the tokens the server used for each sentence; the
                server must run with -show_tokens_to_client.

        Returns:
            An array of shape [len(texts), dim] (or [len(texts), seq_len, dim] when the
            server pools with NONE), or `(array, tokens)` with `show_tokens`.

        Raises:
            TypeError, ValueError: `texts` is not valid input; raised before sending.
            BertRequestError: the server rejected the request.
            TimeoutError: no reply within the client's timeout.
        """
        if is_tokenized:
            self._check_input_lst_lst_str(texts)
        else:
            self._check_input_lst_str(texts)

        if self.length_limit is None:
            warnings.warn('the server has no fixed "max_seq_len" and pads each batch to its '
                          'longest sentence; limit sentence length on the client side for '
                          'better throughput')
        elif self.length_limit and not self._check_length(texts, self.length_limit, is_tokenized):
            warnings.warn('some sentences have more tokens than the server\'s max_seq_len=%d '
                          'and will be truncated on the right; start the server with a larger '
                          '-max_seq_len, or pass check_length=False to silence this warning'
                          % self.length_limit)

        payload = encode_header(texts)
        if self.max_msg_bytes and len(payload) > self.max_msg_bytes:
            raise ValueError('the request is %.1f MB but the server accepts at most %.1f MB '
                             '(its -max_msg_mb); split it into smaller requests'
                             % (len(payload) / 2 ** 20, self.max_msg_bytes / 2 ** 20))
        req_id = self._send(payload, len(texts))
        if not blocking:
            return None
        response = self._recv_ndarray(req_id)
        if show_tokens:
            if self.token_info_available:
                return response.embedding, response.tokens
            warnings.warn('show_tokens=True but the server does not send tokens to clients; '
                          'start it with -show_tokens_to_client')
        return response.embedding

    def fetch(self, delay=0.0):
        """Yield `Response(id, embedding, tokens)` for each pending non-blocking request.

        Responses come in the order the server finishes them. A server error for one
        request raises `BertRequestError` from the generator.
        """
        time.sleep(delay)
        while self.pending_request:
            yield self._fetch_one()

    @_timeout
    def _fetch_one(self):
        return self._recv_ndarray()

    def fetch_all(self, sort=True, concat=False):
        """Collect every pending non-blocking request.

        Args:
            sort: order the results by request id, that is, by sending order.
            concat: concatenate all results into one array (or list) along the first axis.

        Returns:
            A list of embeddings, one per request, or one array with `concat`; None when
            nothing is pending.
        """
        if not self.pending_request:
            return None
        results = list(self.fetch())
        if sort:
            results = sorted(results, key=lambda r: r.id)
        embeddings = [r.embedding for r in results]
        if concat:
            if self.output_fmt == 'ndarray':
                return np.concatenate(embeddings, axis=0)
            return [row for embedding in embeddings for row in embedding]
        return embeddings

    def encode_async(self, batch_generator, max_num_batch=None, delay=0.1, **kwargs):
        """Encode every batch that `batch_generator` yields, sending from a background thread.

        Returns the `fetch` generator, which yields a Response for each batch.
        """

        def send_batches():
            count = 0
            for texts in batch_generator:
                self.encode(texts, blocking=False, **kwargs)
                count += 1
                if max_num_batch and count == max_num_batch:
                    break

        threading.Thread(target=send_batches, daemon=True).start()
        return self.fetch(delay)

    @staticmethod
    def _check_length(texts, len_limit, tokenized):
        if tokenized:
            return all(len(t) <= len_limit for t in texts)
        # A whitespace split is a cheap lower bound of the WordPiece token count.
        return all(len(t.split()) <= len_limit for t in texts)

    @staticmethod
    def _check_input_lst_str(texts):
        if not isinstance(texts, list):
            raise TypeError('texts must be a list of strings, but got %s: %s'
                            % (type(texts).__name__, _short_repr(texts)))
        if not texts:
            raise ValueError('texts must be a non-empty list of strings, but got an empty list')
        for idx, s in enumerate(texts):
            if not isinstance(s, str):
                raise TypeError('texts[%d] must be a string, but got %s: %s'
                                % (idx, type(s).__name__, _short_repr(s)))
            if not s.strip():
                raise ValueError('texts[%d] must be a non-empty string, but got %s'
                                 % (idx, _short_repr(s)))

    @staticmethod
    def _check_input_lst_lst_str(texts):
        if not isinstance(texts, list):
            raise TypeError('texts must be a list of token lists, but got %s: %s'
                            % (type(texts).__name__, _short_repr(texts)))
        if not texts:
            raise ValueError('texts must be a non-empty list of token lists, but got an empty '
                             'list')
        for idx, tokens in enumerate(texts):
            if not isinstance(tokens, list):
                raise TypeError('texts[%d] must be a list of token strings when '
                                'is_tokenized=True, but got %s: %s'
                                % (idx, type(tokens).__name__, _short_repr(tokens)))
            if not tokens:
                raise ValueError('texts[%d] must be a non-empty list of tokens' % idx)
            for jdx, token in enumerate(tokens):
                if not isinstance(token, str) or not token.strip():
                    raise TypeError('texts[%d][%d] must be a non-empty string, but got %s'
                                    % (idx, jdx, _short_repr(token)))

    @staticmethod
    def _print_dict(x, title=None):
        if title:
            print(title)
        for k, v in x.items():
            print('%30s\t=\t%-30s' % (k, v))


class ConcurrentBertClient:
    """A thread-safe pool of `max_concurrency` BertClients that share one server.

    Each call borrows a client from the pool and always returns it, also when the call
    raises. A call that finds every client busy waits up to the clients' timeout for one
    to come back, then raises RuntimeError. Non-blocking encoding is not available here
    because its results belong to the client that sent the request.
    """

    def __init__(self, max_concurrency=10, **kwargs):
        if max_concurrency < 1:
            raise ValueError('max_concurrency must be at least 1, but got %r' % (max_concurrency,))
        self.max_concurrency = max_concurrency
        self.timeout = kwargs.get('timeout', DEFAULT_TIMEOUT_MS)
        self._clients = [BertClient(**kwargs) for _ in range(max_concurrency)]
        self._available = queue.LifoQueue()
        for client in self._clients:
            self._available.put(client)

    def _borrow(self):
        wait_seconds = None if self.timeout < 0 else self.timeout / 1000
        try:
            return self._available.get(timeout=wait_seconds)
        except queue.Empty:
            raise RuntimeError('all %d clients of this ConcurrentBertClient stayed busy for %d '
                               'ms; raise max_concurrency' % (self.max_concurrency,
                                                              self.timeout)) from None

    def _call(self, name, *args, **kwargs):
        client = self._borrow()
        try:
            attribute = getattr(client, name)
            return attribute(*args, **kwargs) if callable(attribute) else attribute
        finally:
            self._available.put(client)

    def encode(self, texts, blocking=True, is_tokenized=False, show_tokens=False):
        if not blocking:
            raise NotImplementedError('ConcurrentBertClient supports only blocking encode')
        return self._call('encode', texts, is_tokenized=is_tokenized, show_tokens=show_tokens)

    @property
    def server_config(self):
        return self._call('server_config')

    @property
    def server_status(self):
        return self._call('server_status')

    @property
    def status(self):
        return self._call('status')

    def fetch(self, *args, **kwargs):
        raise NotImplementedError('ConcurrentBertClient supports only blocking encode')

    fetch_all = fetch
    encode_async = fetch

    def close(self):
        for client in self._clients:
            client.close()

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc_val, exc_tb):
        self.close()
