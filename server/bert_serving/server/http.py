"""The HTTP process: a JSON API, an OpenAI-compatible embeddings endpoint and a dashboard.

With `-http_port N` the ventilator starts this process next to the sink. It serves HTTP
with FastAPI on uvicorn and reaches the workers as an ordinary client of the server. One
asyncio ZeroMQ client pushes requests to the ventilator on `-port` and subscribes to the
sink on `-port_out` with its own identity, at 127.0.0.1 unless -ip names one address. Any
number of HTTP requests can therefore wait for their replies at once, matched by request
id.

Endpoints:

    POST /encode            {"id", "texts", "is_tokenized"} -> {"id", "result"} (1.10.0 API)
    POST /v1/embeddings     the OpenAI embeddings API
    GET  /v1/models         the served model, in the OpenAI format
    POST /tokenize          the tokens each text becomes under the server's settings
    GET  /status/server     the SHOW_STATUS document of the ZeroMQ API
    GET  /status/client     the state of this process's ZeroMQ client and its HTTP counters
    GET  /health            200 once every worker is ready, else 503
    GET  /metrics           Prometheus text format
    GET  /openapi.json, /docs, /redoc, and / (the dashboard)

Control protocol with the ventilator, like the sink's: a DEALER with identity b'HTTP' sends
[READY, b'{}'] once the HTTP port is bound and listening, or [FAILED, message] when the
port cannot be bound or a flag is invalid. [STOP] from the ventilator ends the process.

NOTE: READY cannot wait for the server configuration, because the ventilator replies to
SHOW_STATUS only after every child, this one included, has sent READY. The process
therefore fetches the configuration right after READY and returns 503 until it has it.
"""
import asyncio
import base64
import contextlib
import json
import logging
import os
import signal
import socket
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from importlib.resources import files
from typing import Annotated, Any, List, Literal, Optional, Union
from urllib.parse import parse_qsl

import numpy as np
import uvicorn
import zmq
import zmq.asyncio
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.openapi.utils import get_openapi
from fastapi.responses import HTMLResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from prometheus_client import (CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge,
                               Histogram, ProcessCollector, generate_latest)
from prometheus_client.core import (CounterMetricFamily, GaugeMetricFamily,
                                    HistogramMetricFamily)
from pydantic import BaseModel, Field, StringConstraints
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.middleware.cors import CORSMiddleware
from starlette.routing import Match

from bert_serving.client import __version__
from bert_serving.client.protocol import SHOW_STATUS, decode_header, frames_to_array
from .helper import set_logger
from .model_dir import ModelDirError, default_model_dir
from .process import die_with_parent, parent_is_alive
from .sink import FAILED, READY, STOP
from .tokenization import BertTokenizer

__all__ = ['run_http']

IDENTITY = b'HTTP'
# The model id that /v1/models reports for the embedded all-MiniLM-L6-v2 model, whose
# directory is only called "model".
DEFAULT_MODEL_ID = 'all-MiniLM-L6-v2'
# Seconds to wait for the reply to an encode request before returning 504.
ENCODE_TIMEOUT_S = 300
# Seconds one SHOW_STATUS request may wait for its reply before a new one is sent.
STATUS_REQUEST_TIMEOUT_S = 30
# Seconds an endpoint waits for a status reply before returning 503.
STATUS_WAIT_S = 5
HEALTH_STATUS_WAIT_S = 2
METRICS_STATUS_WAIT_S = 2
RETRY_AFTER_S = 1
# Bytes of an oversized body read and discarded before the 413 reply, so that the
# client can read the reply instead of seeing the connection reset under its upload.
DRAIN_LIMIT_BYTES = 16 * 1024 * 1024
SHORT_REPR_CHARS = 60
MAX_FORM_FIELDS = 1_000_000
LATENCY_BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
# Endpoints whose requests reach the workers; the dashboard counts these as encode requests.
ENCODE_ENDPOINTS = ('/encode', '/v1/embeddings')
DOCS_STATIC_URL = '/static-docs'
# The HTML pages load nothing from other hosts: ReDoc would fetch its logo from its CDN.
PAGE_CSP = ("default-src 'self'; script-src 'self' 'unsafe-inline'; "
            "style-src 'self' 'unsafe-inline'; img-src 'self' data:; font-src 'self' data:; "
            "worker-src 'self' blob:; connect-src 'self'")


# Errors


class ApiError(Exception):
    """An error reply: HTTP status, message, OpenAI-style type and a machine-readable code."""

    def __init__(self, status, message, error_type, code, headers=None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.error_type = error_type
        self.code = code
        self.headers = headers or {}


def invalid(message, code='invalid_value'):
    return ApiError(400, message, 'invalid_request_error', code)


def service_unavailable(message):
    return ApiError(503, message, 'service_unavailable_error', 'starting',
                    {'Retry-After': str(RETRY_AFTER_S)})


class BodyTooLarge(Exception):
    """Raised from the receive channel when a body without Content-Length grows too large."""


class ServerRejection(Exception):
    """An error header the sink published for one of our requests."""

    def __init__(self, message, error_type):
        super().__init__(message)
        self.error_type = error_type


def short_repr(value):
    text = repr(value)
    return text if len(text) <= SHORT_REPR_CHARS else text[:SHORT_REPR_CHARS - 3] + '...'


class Utf8JSONResponse(JSONResponse):
    """A JSON response in UTF-8 that falls back to \\u escapes for strings that are not valid
    Unicode (lone surrogates in an echoed id), which UTF-8 cannot encode."""

    def render(self, content):
        text = json.dumps(content, ensure_ascii=False, allow_nan=False, separators=(',', ':'))
        try:
            return text.encode('utf-8')
        except UnicodeEncodeError:
            return json.dumps(content, allow_nan=False, separators=(',', ':')).encode('ascii')


def error_response(error: ApiError):
    body = {'error': {'message': error.message, 'type': error.error_type, 'code': error.code}}
    return Utf8JSONResponse(body, status_code=error.status, headers=error.headers)


# Request validation


def _reject_constant(name):
    raise ValueError('%s is not valid JSON' % name)


async def read_json_object(request: Request) -> dict:
    body = await request.body()
    if not body.strip():
        raise invalid('the request body is empty: send a JSON object', 'invalid_json')
    try:
        payload = json.loads(body, parse_constant=_reject_constant)
    except UnicodeDecodeError:
        raise invalid('the request body is not UTF-8 text', 'invalid_json') from None
    except RecursionError:
        raise invalid('the request body is nested too deeply', 'invalid_json') from None
    except ValueError as error:
        raise invalid('the request body is not valid JSON: %s' % error, 'invalid_json') from None
    if not isinstance(payload, dict):
        raise invalid('the request body must be a JSON object, but got a JSON %s'
                      % type(payload).__name__, 'invalid_json')
    return payload


def media_type_of(request: Request) -> str:
    return request.headers.get('content-type', '').split(';')[0].strip().lower()


def is_json_media_type(media_type):
    return media_type in ('', 'application/json') or media_type.endswith('+json')


def unsupported_media_type(media_type, accepted):
    return ApiError(415, 'unsupported Content-Type %s: send %s'
                    % (short_repr(media_type), accepted), 'invalid_request_error',
                    'unsupported_media_type')


def check_text(value, where):
    """Raise a 400 ApiError naming `where` unless `value` is a non-blank Unicode string."""
    if not isinstance(value, str):
        raise invalid('%s must be a string, but got %s: %s'
                      % (where, type(value).__name__, short_repr(value)))
    if not value.strip():
        raise invalid('%s must be a non-empty string, but got %s' % (where, short_repr(value)))
    try:
        value.encode('utf-8')
    except UnicodeEncodeError as error:
        raise invalid('%s is not valid Unicode: it contains the lone surrogate %r at position %d'
                      % (where, value[error.start], error.start)) from None


def check_texts(texts, is_tokenized):
    """Validate the `texts` of /encode and /tokenize as the ventilator would, before sending."""
    if texts is _MISSING:
        raise invalid('texts is missing: send a non-empty list of strings', 'missing_field')
    kind = 'token lists' if is_tokenized else 'strings'
    if not isinstance(texts, list):
        raise invalid('texts must be a list of %s, but got %s: %s'
                      % (kind, type(texts).__name__, short_repr(texts)))
    if not texts:
        raise invalid('texts must be a non-empty list of %s, but got an empty list' % kind)
    for idx, item in enumerate(texts):
        if not is_tokenized:
            if isinstance(item, list):
                raise invalid('texts[%d] must be a string, but got a list: %s; set is_tokenized '
                              'to true to send token lists' % (idx, short_repr(item)))
            check_text(item, 'texts[%d]' % idx)
            continue
        if not isinstance(item, list):
            raise invalid('texts[%d] must be a list of token strings because is_tokenized is '
                          'true, but got %s: %s' % (idx, type(item).__name__, short_repr(item)))
        if not item:
            raise invalid('texts[%d] must be a non-empty list of tokens' % idx)
        for jdx, token in enumerate(item):
            check_text(token, 'texts[%d][%d]' % (idx, jdx))


def parse_is_tokenized(value):
    # 1.10.0 clients sent 0 and 1 as well as booleans.
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in ('true', '1', 'false', '0', ''):
        return value.strip().lower() in ('true', '1')
    raise invalid('is_tokenized must be true or false, but got %s' % short_repr(value))


_MISSING = object()


async def read_encode_request(request: Request):
    """Parse the body of /encode and /tokenize: JSON, URL-encoded form or multipart form.

    Returns:
        (request id, texts, is_tokenized), validated.
    """
    media_type = media_type_of(request)
    if is_json_media_type(media_type):
        payload = await read_json_object(request)
        request_id = payload.get('id')
        is_tokenized = parse_is_tokenized(payload.get('is_tokenized', False))
        texts = payload.get('texts', _MISSING)
    elif media_type == 'application/x-www-form-urlencoded':
        body = await request.body()
        try:
            fields = parse_qsl(body.decode('utf-8'), keep_blank_values=True, errors='strict')
        except UnicodeDecodeError:
            raise invalid('the form body is not UTF-8 text', 'invalid_form') from None
        request_id, texts, is_tokenized = form_to_encode_request(fields, body)
    elif media_type == 'multipart/form-data':
        form = await request.form(max_files=MAX_FORM_FIELDS, max_fields=MAX_FORM_FIELDS,
                                  max_part_size=request.app.state.max_body_bytes)
        request_id, texts, is_tokenized = form_to_encode_request(form.multi_items(), b'')
    else:
        raise unsupported_media_type(media_type, 'application/json, '
                                     'application/x-www-form-urlencoded or multipart/form-data')
    check_texts(texts, is_tokenized)
    return request_id, texts, is_tokenized


def form_to_encode_request(fields, raw_body):
    """Read texts from form fields: one `texts` field per text, or one `texts` field that
    contains a JSON array (the only form for token lists)."""
    texts, request_id, is_tokenized = [], None, False
    for name, value in fields:
        if isinstance(value, UploadFile):
            raise invalid('form field %s is a file upload: send texts as text fields'
                          % short_repr(name), 'invalid_form')
        if name == 'texts':
            texts.append(value)
        elif name == 'id':
            request_id = value
        elif name == 'is_tokenized':
            is_tokenized = parse_is_tokenized(value)
    if not texts:
        hint = ('; for a JSON body send the header Content-Type: application/json'
                if raw_body.lstrip().startswith(b'{') else '')
        raise invalid('texts is missing: send one texts field per sentence, or one texts field '
                      'that contains a JSON array%s' % hint, 'missing_field')
    if len(texts) == 1 and texts[0].lstrip().startswith('['):
        try:
            decoded = json.loads(texts[0], parse_constant=_reject_constant)
        except (ValueError, RecursionError):
            decoded = None
        if isinstance(decoded, list):
            return request_id, decoded, is_tokenized
    if is_tokenized:
        raise invalid('with is_tokenized=true, send texts as one form field that contains a '
                      'JSON array of token lists', 'invalid_form')
    return request_id, texts, is_tokenized


def parse_embeddings_request(payload):
    """Validate an OpenAI embeddings request body.

    Returns:
        (inputs, encoding_format, dimensions): a list of strings, 'float' or 'base64', and
        an int or None.
    """
    if 'input' not in payload:
        raise invalid('input is missing: send a string or a list of strings', 'missing_field')
    raw = payload['input']
    if isinstance(raw, str):
        check_text(raw, 'input')
        inputs = [raw]
    elif isinstance(raw, list):
        if not raw:
            raise invalid('input must be a string or a non-empty list of strings, but got an '
                          'empty list')
        for idx, item in enumerate(raw):
            if isinstance(item, (int, list)) and not isinstance(item, bool):
                raise invalid('input[%d] is %s: this server takes text only, not token ids; '
                              'send strings' % (idx, short_repr(item)))
            check_text(item, 'input[%d]' % idx)
        inputs = raw
    else:
        raise invalid('input must be a string or a list of strings, but got %s: %s'
                      % (type(raw).__name__, short_repr(raw)))

    model = payload.get('model')
    if model is None:
        raise invalid('model is missing: send the id that GET /v1/models lists', 'missing_field')
    if not isinstance(model, str):
        raise invalid('model must be a string, but got %s' % short_repr(model))

    encoding_format = payload.get('encoding_format')
    if encoding_format is None:
        encoding_format = 'float'
    if encoding_format not in ('float', 'base64'):
        raise invalid('encoding_format must be "float" or "base64", but got %s'
                      % short_repr(encoding_format))

    dimensions = payload.get('dimensions')
    if dimensions is not None and (not isinstance(dimensions, int) or isinstance(dimensions, bool)
                                   or dimensions < 1):
        raise invalid('dimensions must be a positive integer, but got %s' % short_repr(dimensions))

    user = payload.get('user')
    if user is not None and not isinstance(user, str):
        raise invalid('user must be a string, but got %s' % short_repr(user))
    return inputs, encoding_format, dimensions


# The ZeroMQ client


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


# Metrics


class HttpMetrics:
    """Prometheus metrics of this process, plus the server's own statistics at scrape time."""

    def __init__(self, service):
        self.registry = CollectorRegistry()
        registry = self.registry
        self.requests = Counter('bert_serving_http_requests', 'HTTP requests completed',
                                ['endpoint', 'status'], registry=registry)
        self.sentences = Counter('bert_serving_http_sentences',
                                 'Sentences in valid HTTP requests', ['endpoint', 'status'],
                                 registry=registry)
        self.tokens = Counter('bert_serving_http_tokens',
                              'Tokens, [CLS] and [SEP] included, that the HTTP process counted '
                              'for /v1/embeddings usage and /tokenize', ['endpoint'],
                              registry=registry)
        self.errors = Counter('bert_serving_http_errors', 'HTTP error replies',
                              ['endpoint', 'code'], registry=registry)
        self.latency = Histogram('bert_serving_http_request_duration_seconds',
                                 'Time from receiving an HTTP request to the end of its reply',
                                 ['endpoint'], buckets=LATENCY_BUCKETS_S, registry=registry)
        self.in_flight = Gauge('bert_serving_http_requests_in_flight',
                               'HTTP requests in progress', registry=registry)
        self.slots_in_use = Gauge('bert_serving_http_slots_in_use',
                                  'Requests holding one of the -http_max_connect slots',
                                  registry=registry)
        self.slots_in_use.set_function(lambda: service.num_active)
        Gauge('bert_serving_http_max_connect', 'The -http_max_connect limit',
              registry=registry).set(service.max_active)
        registry.register(_ServerStatusCollector(service))
        ProcessCollector(registry=registry)

        # Totals of the encode endpoints, for the dashboard.
        self.encode_requests = 0
        self.encode_errors = 0
        self.encode_sentences = 0
        self.encode_seconds = 0.0

    def observe(self, endpoint, status, seconds, state):
        code = str(status)
        self.requests.labels(endpoint, code).inc()
        self.latency.labels(endpoint).observe(seconds)
        num_sentences = state.get('num_sentences', 0)
        if num_sentences:
            self.sentences.labels(endpoint, code).inc(num_sentences)
        if state.get('num_tokens'):
            self.tokens.labels(endpoint).inc(state['num_tokens'])
        if status >= 400:
            self.errors.labels(endpoint, state.get('error_code', 'http_%d' % status)).inc()
        if endpoint in ENCODE_ENDPOINTS:
            self.encode_requests += 1
            self.encode_errors += status >= 400
            self.encode_sentences += num_sentences if status < 400 else 0
            self.encode_seconds += seconds

    @property
    def summary(self):
        return {'encode_requests': self.encode_requests, 'encode_errors': self.encode_errors,
                'encode_sentences': self.encode_sentences,
                'encode_seconds': self.encode_seconds}


class _ServerStatusCollector:
    """Metrics read from the SHOW_STATUS document that /metrics fetched for this scrape."""

    def __init__(self, service):
        self.service = service

    def collect(self):
        status = self.service.scrape_status
        yield GaugeMetricFamily('bert_serving_server_up', '1 when the server replied to the '
                                'status request of this scrape, else 0', value=int(bool(status)))
        if not status:
            return
        yield GaugeMetricFamily('bert_serving_workers', 'Workers the server runs (-num_worker)',
                                value=status.get('num_worker', 0))
        yield GaugeMetricFamily('bert_serving_ready_workers', 'Workers ready for jobs',
                                value=status.get('num_ready_worker', 0))
        yield GaugeMetricFamily('bert_serving_queued_jobs', 'Jobs waiting in the ventilator',
                                value=status.get('num_queued_job', 0))
        yield GaugeMetricFamily('bert_serving_in_flight_jobs', 'Jobs sent to workers and not '
                                'finished', value=status.get('num_in_flight_job', 0))
        statistic = status.get('statistic', {})
        yield CounterMetricFamily('bert_serving_server_requests',
                                  'Encode requests the server took from all clients',
                                  value=statistic.get('num_data_request', 0))
        yield CounterMetricFamily('bert_serving_server_sentences', 'Sentences the server took '
                                  'from all clients', value=statistic.get('num_total_seq', 0))

        workers = status.get('workers', {})
        jobs = CounterMetricFamily('bert_serving_worker_jobs', 'Jobs a worker finished',
                                   labels=['worker'])
        sentences = CounterMetricFamily('bert_serving_worker_sentences',
                                        'Sentences a worker encoded', labels=['worker'])
        busy = CounterMetricFamily('bert_serving_worker_busy_seconds',
                                   'Seconds a worker spent computing jobs', labels=['worker'])
        for name, stats in sorted(workers.items()):
            jobs.add_metric([name], stats.get('num_job', 0))
            sentences.add_metric([name], stats.get('num_sentence', 0))
            busy.add_metric([name], stats.get('busy_seconds', 0.0))
        yield jobs
        yield sentences
        yield busy

        counts = sorted((float(bound), count)
                        for bound, count in status.get('batch_size_histogram', {}).items())
        cumulative, buckets = 0, []
        for bound, count in counts:
            cumulative += count
            buckets.append(('+Inf' if bound == float('inf') else '%g' % bound, cumulative))
        if not buckets or buckets[-1][0] != '+Inf':
            buckets.append(('+Inf', cumulative))
        total_rows = sum(stats.get('num_sentence', 0) for stats in workers.values())
        yield HistogramMetricFamily('bert_serving_batch_size', 'Sentences per job sent to a '
                                    'worker', buckets=buckets, sum_value=total_rows)


# The service


class HttpService:
    """State shared by the endpoints: the ZeroMQ client, the server configuration, limits."""

    def __init__(self, args, context, logger):
        self.args = args
        self.logger = logger
        self.client = AsyncBertClient(context, server_address(args), args.port, args.port_out,
                                      logger)
        self.max_active = args.http_max_connect
        self.max_body_bytes = int(args.http_max_body_mb * 1024 * 1024)
        self.num_active = 0
        self.config = None  # the first SHOW_STATUS document
        self.tokenizer = None
        self.model_id = None
        self.startup_error = None
        self.scrape_status = None
        self.start_time = int(time.time())
        # Tokenizing runs here, off the event loop, so large requests do not stall others.
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix='HTTP-tokenizer')
        self.metrics = HttpMetrics(self)
        self._config_task = None
        self.app = build_app(self)

    def start(self):
        self.client.start()
        self._config_task = asyncio.ensure_future(self._load_config())

    async def close(self):
        if self._config_task is not None:
            self._config_task.cancel()
            with contextlib.suppress(BaseException):
                await self._config_task
        await self.client.close()
        self.executor.shutdown(wait=False, cancel_futures=True)

    async def _load_config(self):
        while True:
            try:
                status = await self.client.fetch_status(STATUS_REQUEST_TIMEOUT_S)
                break
            except asyncio.TimeoutError:
                self.logger.info('still waiting for the server status after %ds',
                                 STATUS_REQUEST_TIMEOUT_S)
        try:
            self.tokenizer = await asyncio.get_running_loop().run_in_executor(
                self.executor, BertTokenizer, status['vocab_file'], status['do_lower_case'],
                status.get('max_seq_len') or 512, bool(status.get('no_special_token')))
        except (OSError, ValueError, KeyError) as error:
            self.startup_error = 'cannot build the tokenizer from the server status: %s' % error
            self.logger.error(self.startup_error)
            return
        self.model_id = model_id_of(status.get('model_dir'))
        self.config = status
        self.logger.info('serving model %s (%s dimensions) over HTTP',
                         self.model_id, status.get('embedding_dim'))

    def require_config(self):
        """Return the server configuration, or raise a 503 ApiError while it is unknown."""
        if self.startup_error:
            raise ApiError(500, self.startup_error, 'server_error', 'internal_error')
        if self.config is None:
            raise service_unavailable('the server is starting: retry in a moment')
        return self.config

    @contextlib.contextmanager
    def slot(self):
        """Hold one of the -http_max_connect slots, or raise a 429 ApiError when none is free."""
        if self.num_active >= self.max_active:
            raise ApiError(429, 'too many concurrent requests: this server handles at most %d at '
                           'once (-http_max_connect); retry after %d s'
                           % (self.max_active, RETRY_AFTER_S), 'rate_limit_error',
                           'too_many_requests', {'Retry-After': str(RETRY_AFTER_S)})
        self.num_active += 1
        try:
            yield
        finally:
            self.num_active -= 1

    async def encode(self, texts):
        try:
            return await self.client.encode(texts)
        except asyncio.TimeoutError:
            raise ApiError(504, 'timed out: no reply from the workers within %d s'
                           % ENCODE_TIMEOUT_S, 'timeout_error', 'timeout') from None
        except ServerRejection as error:
            if error.error_type == 'server_error':
                raise ApiError(500, str(error), 'server_error', 'worker_failed') from None
            if error.error_type in ('server_busy', 'server_shutdown'):
                raise ApiError(503, str(error), 'service_unavailable_error', error.error_type,
                               {'Retry-After': str(RETRY_AFTER_S)}) from None
            raise invalid('the server rejected the request: %s' % error,
                          'rejected_by_server') from None

    async def tokenize(self, texts, is_tokenized):
        method = (self.tokenizer.encode_tokens if is_tokenized else self.tokenizer.encode_texts)
        return await asyncio.get_running_loop().run_in_executor(self.executor, method, texts, True)

    async def fetch_status(self, timeout):
        try:
            return await self.client.fetch_status(timeout)
        except asyncio.TimeoutError:
            raise service_unavailable('timed out: no reply to the status request within %d s'
                                      % timeout) from None


def model_id_of(model_dir):
    """Name the served model after its directory, or all-MiniLM-L6-v2 for the default one."""
    path = os.path.realpath(model_dir or '')
    with contextlib.suppress(ModelDirError):
        if path == os.path.realpath(default_model_dir()):
            return DEFAULT_MODEL_ID
    return os.path.basename(path.rstrip(os.sep)) or 'bert'


# OpenAPI models document the bodies. The endpoints validate by hand so that every error
# names the bad element and has the shape of ErrorResponse.

NonBlankText = Annotated[str, StringConstraints(pattern=r'\S')]
TextList = Annotated[List[NonBlankText], Field(min_length=1)]
TokenLists = Annotated[List[TextList], Field(min_length=1)]


class ErrorDetail(BaseModel):
    message: str
    type: str
    code: str


class ErrorResponse(BaseModel):
    error: ErrorDetail


class EncodeRequest(BaseModel):
    id: Any = Field(None, description='any JSON value, echoed in the reply')
    texts: Union[TextList, TokenLists] = Field(
        ..., description='strings, or token lists with is_tokenized; "A ||| B" is the '
                         'sentence pair (A, B)')
    is_tokenized: bool = False


class EncodeResponse(BaseModel):
    id: Any = None
    result: List[Union[List[float], List[List[float]]]] = Field(
        ..., description='one vector per text, or one vector per token with '
                         '-pooling_strategy NONE')


class TokenizeResponse(BaseModel):
    id: Any = None
    tokens: List[List[str]]
    num_tokens: List[int]


class EmbeddingsRequest(BaseModel):
    input: Union[NonBlankText, TextList]
    model: str = Field(..., description='any string; the reply names the served model')
    encoding_format: Optional[Literal['float', 'base64']] = Field(
        'float', description='base64: the little-endian float32 bytes of each vector')
    dimensions: Optional[int] = Field(
        None, ge=1, description='must equal the embedding size, because the served model is '
                                'not trained for shortened (Matryoshka) embeddings')
    user: Optional[str] = Field(None, description='ignored')


class Embedding(BaseModel):
    object: Literal['embedding']
    index: int
    embedding: Union[List[float], str]


class Usage(BaseModel):
    prompt_tokens: int
    total_tokens: int


class EmbeddingsResponse(BaseModel):
    object: Literal['list']
    data: List[Embedding]
    model: str
    usage: Usage


class ModelCard(BaseModel):
    id: str
    object: Literal['model']
    created: int
    owned_by: str


class ModelList(BaseModel):
    object: Literal['list']
    data: List[ModelCard]


class HealthResponse(BaseModel):
    status: Literal['ok']
    num_worker: int
    num_ready_worker: int


ENCODE_FORM_SCHEMA = {
    'type': 'object',
    'required': ['texts'],
    'properties': {
        'id': {'type': 'string'},
        'texts': {'type': 'array', 'minItems': 1, 'items': {'type': 'string', 'pattern': r'\S'},
                  'description': 'one field per text, or one field holding a JSON array '
                                 '(the only form for token lists)'},
        'is_tokenized': {'type': 'boolean'},
    },
}


def _error_responses(*codes):
    descriptions = {400: 'invalid input', 404: 'not found', 413: 'body over -http_max_body_mb',
                    415: 'unsupported Content-Type',
                    429: 'all -http_max_connect slots busy; see Retry-After',
                    500: 'server fault', 503: 'the server is starting; see Retry-After',
                    504: 'no reply from the workers in time'}
    return {code: {'model': ErrorResponse, 'description': descriptions[code]} for code in codes}


def _request_body(json_model, with_form):
    content = {'application/json': {'schema': {'$ref': '#/components/schemas/%s' % json_model}}}
    if with_form:
        content['application/x-www-form-urlencoded'] = {'schema': ENCODE_FORM_SCHEMA}
        content['multipart/form-data'] = {'schema': ENCODE_FORM_SCHEMA}
    return {'requestBody': {'required': True, 'content': content}}


def _build_openapi(app):
    if app.openapi_schema:
        return app.openapi_schema
    schema = get_openapi(title=app.title, version=app.version, description=app.description,
                         routes=app.routes)
    components = schema.setdefault('components', {}).setdefault('schemas', {})
    for model in (EncodeRequest, EmbeddingsRequest):
        definition = model.model_json_schema(ref_template='#/components/schemas/{model}')
        components.update(definition.pop('$defs', {}))
        components[model.__name__] = definition
    app.openapi_schema = schema
    return schema


# The application


def build_app(service: HttpService) -> FastAPI:
    app = FastAPI(title='bert-serving HTTP API', version=__version__, docs_url=None,
                  redoc_url=None, openapi_url='/openapi.json',
                  description='Sentence embeddings from a bert-serving server. Errors are '
                              '{"error": {"message", "type", "code"}}.')
    app.state.max_body_bytes = service.max_body_bytes
    app.openapi = lambda: _build_openapi(app)
    _add_exception_handlers(app, service)
    _add_api_routes(app, service)
    _add_status_routes(app, service)
    _add_page_routes(app)
    app.add_middleware(GuardMiddleware, service=service)
    origins = [origin.strip() for origin in service.args.cors.split(',')]
    app.add_middleware(CORSMiddleware, allow_origins=origins, allow_methods=['*'],
                       allow_headers=['*'], expose_headers=['Retry-After'])
    return app


def _add_exception_handlers(app, service):
    def record(request, error):
        request.state.error_code = error.code
        level = {500: logging.ERROR, 504: logging.WARNING}.get(error.status, logging.INFO)
        service.logger.log(level, '%s %s -> %d %s: %s', request.method, request.url.path,
                           error.status, error.code, error.message)
        return error_response(error)

    @app.exception_handler(ApiError)
    async def on_api_error(request: Request, error: ApiError):
        return record(request, error)

    @app.exception_handler(StarletteHTTPException)
    async def on_http_exception(request: Request, error: StarletteHTTPException):
        error_type = 'not_found_error' if error.status_code == 404 else 'invalid_request_error'
        code = {404: 'not_found', 405: 'method_not_allowed'}.get(error.status_code,
                                                                 'http_%d' % error.status_code)
        message = str(error.detail)
        if error.status_code == 404:
            message = 'no endpoint %s: see /docs for the endpoints' % short_repr(request.url.path)
        return record(request, ApiError(error.status_code, message, error_type, code,
                                        dict(error.headers or {})))

    @app.exception_handler(RequestValidationError)
    async def on_validation_error(request: Request, error: RequestValidationError):
        first = error.errors()[0] if error.errors() else {}
        where = '.'.join(str(part) for part in first.get('loc', ()))
        return record(request, invalid('%s: %s' % (where, first.get('msg', 'invalid value'))))


def _add_api_routes(app, service):
    @app.post('/encode', response_model=None, openapi_extra=_request_body('EncodeRequest', True),
              responses={200: {'model': EncodeResponse},
                         **_error_responses(400, 413, 415, 429, 500, 503, 504)},
              summary='Encode texts (bert-as-service 1.10.0 API)')
    async def encode(request: Request):
        request_id, texts, is_tokenized = await read_encode_request(request)
        request.state.num_sentences = len(texts)
        service.require_config()
        with service.slot():
            array = await service.encode(texts)
        return Utf8JSONResponse({'id': request_id, 'result': array.tolist()})

    @app.post('/v1/embeddings', response_model=None,
              openapi_extra=_request_body('EmbeddingsRequest', False),
              responses={200: {'model': EmbeddingsResponse},
                         **_error_responses(400, 413, 415, 429, 500, 503, 504)},
              summary='Create embeddings (OpenAI embeddings API)')
    async def embeddings(request: Request):
        media_type = media_type_of(request)
        if not is_json_media_type(media_type):
            raise unsupported_media_type(media_type, 'application/json')
        inputs, encoding_format, dimensions = parse_embeddings_request(
            await read_json_object(request))
        request.state.num_sentences = len(inputs)
        config = service.require_config()
        check_dimensions(config, service.model_id, dimensions)
        with service.slot():
            encoding = asyncio.ensure_future(service.encode(inputs))
            try:
                batch = await service.tokenize(inputs, False)
            except BaseException:
                encoding.cancel()
                raise
            array = await encoding
        num_tokens = int(batch.lengths.sum())
        request.state.num_tokens = num_tokens
        return Utf8JSONResponse({
            'object': 'list',
            'data': [{'object': 'embedding', 'index': index,
                      'embedding': format_embedding(row, encoding_format)}
                     for index, row in enumerate(array)],
            'model': service.model_id,
            'usage': {'prompt_tokens': num_tokens, 'total_tokens': num_tokens},
        })

    @app.post('/tokenize', response_model=None, openapi_extra=_request_body('EncodeRequest', True),
              responses={200: {'model': TokenizeResponse},
                         **_error_responses(400, 413, 415, 429, 500, 503)},
              summary='Show the tokens each text becomes, [CLS], [SEP] and truncation included')
    async def tokenize(request: Request):
        request_id, texts, is_tokenized = await read_encode_request(request)
        request.state.num_sentences = len(texts)
        service.require_config()
        with service.slot():
            batch = await service.tokenize(texts, is_tokenized)
        request.state.num_tokens = int(batch.lengths.sum())
        return Utf8JSONResponse({'id': request_id, 'tokens': batch.tokens,
                                 'num_tokens': batch.lengths.tolist()})

    @app.get('/v1/models', response_model=None,
             responses={200: {'model': ModelList}, **_error_responses(500, 503)},
             summary='List the served model (OpenAI models API)')
    async def list_models():
        service.require_config()
        return Utf8JSONResponse({'object': 'list', 'data': [model_card(service)]})

    @app.get('/v1/models/{model_id}', response_model=None,
             responses={200: {'model': ModelCard}, **_error_responses(404, 500, 503)},
             summary='Describe the served model (OpenAI models API)')
    async def retrieve_model(model_id: str):
        service.require_config()
        if model_id != service.model_id:
            raise ApiError(404, 'model %s not found: this server serves %s'
                           % (short_repr(model_id), service.model_id), 'not_found_error',
                           'model_not_found')
        return Utf8JSONResponse(model_card(service))


def check_dimensions(config, model_id, dimensions):
    """Accept `dimensions` only when it equals the embedding size (see EmbeddingsRequest)."""
    if str(config.get('pooling_strategy')) == 'NONE':
        raise invalid('/v1/embeddings returns one vector per input, but the server runs with '
                      '-pooling_strategy NONE (one vector per token); use /encode',
                      'unsupported_pooling')
    size = config.get('embedding_dim')
    if dimensions is None or dimensions == size:
        return
    if dimensions < size:
        raise invalid('dimensions=%d is not supported: the served model %s returns %d-dimensional '
                      'embeddings and is not trained for shortened (Matryoshka) embeddings, so '
                      'it does not support dimensions; omit dimensions or pass %d'
                      % (dimensions, model_id, size, size), 'unsupported_dimensions')
    raise invalid('dimensions=%d is larger than the %d dimensions of the served model %s; omit '
                  'dimensions or pass %d' % (dimensions, size, model_id, size),
                  'unsupported_dimensions')


def format_embedding(row: np.ndarray, encoding_format):
    if encoding_format == 'base64':
        return base64.b64encode(row.astype('<f4').tobytes()).decode('ascii')
    return row.tolist()


def model_card(service):
    return {'id': service.model_id, 'object': 'model', 'created': service.start_time,
            'owned_by': 'bert-serving'}


def _add_status_routes(app, service):
    @app.get('/status/server', response_model=None,
             responses={200: {'content': {'application/json': {'schema': {'type': 'object'}}},
                              'description': 'the SHOW_STATUS document of the ZeroMQ API'},
                        **_error_responses(503)},
             summary='Server configuration and statistics (ZeroMQ SHOW_STATUS)')
    async def server_status():
        return Utf8JSONResponse(await service.fetch_status(STATUS_WAIT_S))

    @app.get('/status/client', response_model=None,
             responses={200: {'content': {'application/json': {'schema': {'type': 'object'}}},
                              'description': 'the ZeroMQ client state of the HTTP process'}},
             summary='State of the HTTP process: its ZeroMQ client and request counters')
    async def client_status():
        return Utf8JSONResponse({
            **service.client.status,
            'model': service.model_id,
            'http_port': service.args.http_port,
            'http_max_connect': service.max_active,
            'http_requests_in_flight': service.num_active,
            'http': service.metrics.summary,
        })

    @app.get('/health', response_model=None,
             responses={200: {'model': HealthResponse}, **_error_responses(500, 503)},
             summary='200 when every worker is ready, else 503')
    async def health():
        service.require_config()
        status = await service.fetch_status(HEALTH_STATUS_WAIT_S)
        num_worker, num_ready = status.get('num_worker', 0), status.get('num_ready_worker', 0)
        if num_ready < num_worker:
            raise service_unavailable('%d of %d workers are ready' % (num_ready, num_worker))
        return Utf8JSONResponse({'status': 'ok', 'num_worker': num_worker,
                                 'num_ready_worker': num_ready})

    @app.get('/metrics', response_model=None,
             responses={200: {'content': {'text/plain': {'schema': {'type': 'string'}}},
                              'description': 'Prometheus text format'}},
             summary='Prometheus metrics')
    async def metrics():
        try:
            service.scrape_status = await service.client.fetch_status(METRICS_STATUS_WAIT_S)
        except asyncio.TimeoutError:
            service.scrape_status = None
        return Response(generate_latest(service.metrics.registry),
                        media_type=CONTENT_TYPE_LATEST)


def _add_page_routes(app):
    static_dir = files('fastapi_offline') / 'static'
    app.mount(DOCS_STATIC_URL, StaticFiles(directory=str(static_dir)), name='static-docs')

    @app.get('/docs', include_in_schema=False)
    async def swagger_ui():
        return with_csp(get_swagger_ui_html(
            openapi_url='/openapi.json', title=app.title + ' - Swagger UI',
            swagger_js_url=DOCS_STATIC_URL + '/swagger-ui-bundle.js',
            swagger_css_url=DOCS_STATIC_URL + '/swagger-ui.css',
            swagger_favicon_url=DOCS_STATIC_URL + '/favicon.png',
            # No validator badge, which Swagger UI would load from validator.swagger.io.
            swagger_ui_parameters={'validatorUrl': None}))

    @app.get('/redoc', include_in_schema=False)
    async def redoc():
        return with_csp(get_redoc_html(
            openapi_url='/openapi.json', title=app.title + ' - ReDoc',
            redoc_js_url=DOCS_STATIC_URL + '/redoc.standalone.js',
            redoc_favicon_url=DOCS_STATIC_URL + '/favicon.png', with_google_fonts=False))

    @app.get('/', include_in_schema=False)
    async def dashboard():
        return with_csp(HTMLResponse(DASHBOARD_HTML))


def with_csp(response):
    response.headers['Content-Security-Policy'] = PAGE_CSP
    return response


class GuardMiddleware:
    """Enforce -http_max_body_mb, turn unexpected exceptions into JSON 500s, record metrics."""

    def __init__(self, app, service: HttpService):
        self.app = app
        self.service = service

    def endpoint_of(self, scope):
        partial = None
        for route in self.service.app.router.routes:
            match, _ = route.matches(scope)
            if match == Match.FULL:
                return route.path
            if match == Match.PARTIAL and partial is None:
                partial = route.path
        return partial or 'other'

    async def __call__(self, scope, receive, send):
        if scope['type'] != 'http':
            await self.app(scope, receive, send)
            return
        service = self.service
        started = time.perf_counter()
        state = scope.setdefault('state', {})
        reply = {'status': 500, 'started': False}

        async def send_and_record(message):
            if message['type'] == 'http.response.start':
                reply['status'] = message['status']
                reply['started'] = True
            await send(message)

        received = 0

        async def receive_limited():
            nonlocal received
            message = await receive()
            if message['type'] == 'http.request':
                received += len(message.get('body', b''))
                if received > service.max_body_bytes:
                    raise BodyTooLarge()
            return message

        service.metrics.in_flight.inc()
        try:
            if self._declared_length(scope) > service.max_body_bytes:
                if not self._expects_continue(scope):
                    await self._drain(receive, 0)
                await self._reject_large_body(scope, receive, send_and_record, state)
            else:
                await self.app(scope, receive_limited, send_and_record)
        except BodyTooLarge:
            await self._drain(receive, received)
            await self._reject_large_body(scope, receive, send_and_record, state)
        except Exception:
            service.logger.exception('%s %s failed', scope.get('method'), scope.get('path'))
            if reply['started']:
                raise
            state['error_code'] = 'internal_error'
            await error_response(ApiError(500, 'internal error of the HTTP process; the server '
                                          'log has the details', 'server_error',
                                          'internal_error'))(scope, receive, send_and_record)
        finally:
            seconds = time.perf_counter() - started
            service.metrics.in_flight.dec()
            service.metrics.observe(self.endpoint_of(scope), reply['status'], seconds, state)
            service.logger.debug('%s %s -> %d in %.1f ms', scope.get('method'), scope.get('path'),
                                 reply['status'], seconds * 1000)

    @staticmethod
    def _declared_length(scope):
        for name, value in scope.get('headers', ()):
            if name == b'content-length':
                try:
                    return int(value)
                except ValueError:
                    return 0
        return 0

    @staticmethod
    def _expects_continue(scope):
        return any(name == b'expect' and value.lower() == b'100-continue'
                   for name, value in scope.get('headers', ()))

    @staticmethod
    async def _drain(receive, received):
        while received < DRAIN_LIMIT_BYTES:
            message = await receive()
            if message['type'] != 'http.request':
                return
            received += len(message.get('body', b''))
            if not message.get('more_body', False):
                return

    async def _reject_large_body(self, scope, receive, send, state):
        limit_mb = self.service.args.http_max_body_mb
        state['error_code'] = 'body_too_large'
        self.service.logger.info('%s %s -> 413: the body is over %g MiB', scope.get('method'),
                                 scope.get('path'), limit_mb)
        response = error_response(ApiError(
            413, 'the request body is larger than %g MiB (-http_max_body_mb); split the request'
            % limit_mb, 'invalid_request_error', 'body_too_large'))
        response.headers['Connection'] = 'close'
        await response(scope, receive, send)


# The process


class _UvicornServer(uvicorn.Server):
    """A uvicorn server that ignores signals: the ventilator stops this process with STOP."""

    @contextlib.contextmanager
    def capture_signals(self):
        yield


def bind_address(args):
    """Return the address the HTTP port binds to: the server's -ip, where '*' (the default)
    means all interfaces, like the ZeroMQ ports."""
    ip = getattr(args, 'ip', None)
    return '0.0.0.0' if ip in (None, '', '*') else ip


def server_address(args):
    """Return the address at which this process reaches the server's ZeroMQ ports."""
    address = bind_address(args)
    return '127.0.0.1' if address == '0.0.0.0' else address


def _bind_listener(args):
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        listener.bind((bind_address(args), args.http_port))
        listener.listen(2048)
    except OSError:
        listener.close()
        raise
    return listener


def _check_args(args):
    """Return the reason the HTTP flags cannot work, or None."""
    if args.http_max_connect < 1:
        return 'invalid -http_max_connect %d: allow at least 1 request' % args.http_max_connect
    if not args.http_max_body_mb > 0:
        return 'invalid -http_max_body_mb %g: give a positive size in MiB' % args.http_max_body_mb
    if getattr(args, 'curve_secret_key', None):
        # Without a client key of its own, the ZeroMQ client of this process would be
        # rejected by the CURVE-encrypted ports and every request would wait forever.
        return ('-http_port cannot be combined with -curve_secret_key: the HTTP process has no '
                'CURVE client key; drop one of the two flags')
    return None


def _route_uvicorn_logs(logger, verbose):
    uvicorn_logger = logging.getLogger('uvicorn')
    uvicorn_logger.handlers = list(logger.handlers)
    uvicorn_logger.propagate = False
    uvicorn_logger.setLevel(logging.INFO if verbose else logging.WARNING)


def run_http(args, backend_addr):
    """Entry point of the HTTP process."""
    die_with_parent()
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    logger = set_logger('HTTP', args.verbose)
    _route_uvicorn_logs(logger, args.verbose)
    try:
        asyncio.run(_run(args, backend_addr, logger))
    except Exception:
        logger.exception('the HTTP process failed')
        raise
    logger.info('terminated')


async def _run(args, backend_addr, logger):
    context = zmq.asyncio.Context()
    control = context.socket(zmq.DEALER)
    control.setsockopt(zmq.IDENTITY, IDENTITY)
    control.setsockopt(zmq.LINGER, 1000)
    control.connect(backend_addr)
    try:
        message = _check_args(args)
        listener = None
        if message is None:
            try:
                listener = _bind_listener(args)
            except OSError as error:
                message = 'cannot bind the HTTP port %d: %s' % (args.http_port,
                                                                error.strerror or error)
        if message is not None:
            logger.error(message)
            await control.send_multipart([FAILED, message.encode('utf-8')])
            return
        await _serve(args, listener, control, context, logger)
    finally:
        control.close()
        context.term()


async def _serve(args, listener, control, context, logger):
    service = HttpService(args, context, logger)
    config = uvicorn.Config(service.app, lifespan='off', log_config=None, access_log=False,
                            loop='asyncio', http='h11', ws='none', timeout_graceful_shutdown=5)
    server = _UvicornServer(config)
    serving = asyncio.ensure_future(server.serve(sockets=[listener]))
    while not server.started and not serving.done():
        await asyncio.sleep(0.02)
    if not server.started:
        message = 'the HTTP server on port %d failed to start' % args.http_port
        logger.error(message)
        await control.send_multipart([FAILED, message.encode('utf-8')])
        await service.close()
        serving.result()  # re-raise what stopped it
        return

    service.start()
    await control.send_multipart([READY, b'{}'])
    logger.info('ready, serving HTTP on port %d with at most %d concurrent requests',
                args.http_port, service.max_active)
    try:
        await _wait_for_stop(control, serving, logger)
    finally:
        server.should_exit = True
        with contextlib.suppress(Exception):
            await serving
        listener.close()
        await service.close()


async def _wait_for_stop(control, serving, logger):
    while not serving.done():
        if await control.poll(1000):
            frames = await control.recv_multipart()
            if frames[0] == STOP:
                return
            logger.error('ignoring a control message of unknown kind %r', frames[0][:20])
        if not parent_is_alive():
            logger.warning('the server process is gone, so exiting')
            return
    logger.error('the HTTP server stopped on its own')


DASHBOARD_HTML = r"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>bert-serving dashboard</title>
<style>
  :root { --fg: #1f2933; --muted: #616e7c; --line: #e4e7eb; --accent: #2563eb; --bad: #b91c1c;
          --good: #15803d; }
  * { box-sizing: border-box; }
  body { margin: 0; font: 14px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif;
         color: var(--fg); background: #f5f7fa; }
  header { display: flex; align-items: baseline; gap: 16px; padding: 16px 24px;
           background: #fff; border-bottom: 1px solid var(--line); }
  header h1 { margin: 0; font-size: 20px; }
  #health { padding: 2px 10px; border-radius: 12px; color: #fff; background: var(--muted); }
  #health.ok { background: var(--good); }
  #health.bad { background: var(--bad); }
  main { padding: 16px 24px; display: grid; gap: 16px; }
  .cards { display: grid; grid-template-columns: repeat(auto-fit, minmax(150px, 1fr)); gap: 12px; }
  .card, section { background: #fff; border: 1px solid var(--line); border-radius: 8px;
                   padding: 12px 16px; }
  .card .label { color: var(--muted); font-size: 12px; text-transform: uppercase; }
  .card .value { font-size: 24px; font-variant-numeric: tabular-nums; }
  section h2 { margin: 0 0 8px; font-size: 15px; }
  table { border-collapse: collapse; width: 100%; font-variant-numeric: tabular-nums; }
  th, td { text-align: left; padding: 4px 8px; border-bottom: 1px solid var(--line); }
  th { color: var(--muted); font-weight: 600; }
  .two { display: grid; grid-template-columns: repeat(auto-fit, minmax(380px, 1fr)); gap: 16px; }
  canvas { display: block; width: 100%; height: 140px; }
  footer { padding: 8px 24px 24px; color: var(--muted); }
  a { color: var(--accent); }
  #error { color: var(--bad); }
</style>
</head>
<body>
<header>
  <h1>bert-serving</h1>
  <span>model <strong id="model-id">loading...</strong></span>
  <span id="health">unknown</span>
  <span id="error"></span>
</header>
<main>
  <div class="cards">
    <div class="card">
      <div class="label">Requests / s</div>
      <div class="value" id="rate">-</div>
    </div>
    <div class="card">
      <div class="label">Mean latency (ms)</div>
      <div class="value" id="latency">-</div>
    </div>
    <div class="card">
      <div class="label">Encode requests</div>
      <div class="value" id="encode-requests">-</div>
    </div>
    <div class="card">
      <div class="label">Sentences</div>
      <div class="value" id="encode-sentences">-</div>
    </div>
    <div class="card">
      <div class="label">Errors</div>
      <div class="value" id="encode-errors">-</div>
    </div>
    <div class="card">
      <div class="label">Queued jobs</div>
      <div class="value" id="queued">-</div>
    </div>
    <div class="card">
      <div class="label">Slots in use</div>
      <div class="value" id="slots">-</div>
    </div>
  </div>
  <section>
    <h2>Encode requests per second and mean latency, last 3 minutes</h2>
    <canvas id="chart"></canvas>
  </section>
  <div class="two">
    <section><h2>Workers</h2>
      <table>
        <thead>
          <tr><th>worker</th><th>jobs</th><th>sentences</th><th>busy s</th><th>busy now</th></tr>
        </thead>
        <tbody id="workers"></tbody>
      </table>
    </section>
    <section><h2>Configuration</h2><table><tbody id="config"></tbody></table></section>
  </div>
</main>
<footer>
  Updated <span id="updated">never</span>, every 1.5 s.
  <a href="/docs">API docs</a> · <a href="/redoc">ReDoc</a> · <a href="/openapi.json">OpenAPI</a>
  · <a href="/metrics">metrics</a> · <a href="/health">health</a>
</footer>
<script>
"use strict";
const CONFIG_KEYS = ["model_dir", "model_layout", "embedding_dim", "pooling_strategy",
  "pooling_layer", "max_seq_len", "num_worker", "max_batch_size", "device_map",
  "server_version", "tensorflow_version", "port", "port_out", "http_port", "http_max_connect",
  "server_start_time"];
// 120 samples, one every 1.5 s: the last 3 minutes.
const MAX_SAMPLES = 120;
const samples = [];
let previous = null;
let previousBusy = {};

function text(id, value) { document.getElementById(id).textContent = value; }

function cell(row, value) {
  const td = document.createElement("td");
  td.textContent = value;
  row.appendChild(td);
}

function fillConfig(server) {
  const body = document.getElementById("config");
  body.replaceChildren();
  for (const key of CONFIG_KEYS) {
    if (!(key in server)) continue;
    const row = document.createElement("tr");
    const value = server[key];
    cell(row, key);
    cell(row, typeof value === "object" && value !== null ? JSON.stringify(value) : String(value));
    body.appendChild(row);
  }
}

function fillWorkers(server, seconds) {
  const body = document.getElementById("workers");
  body.replaceChildren();
  const workers = server.workers || {};
  for (const name of Object.keys(workers).sort()) {
    const w = workers[name];
    const row = document.createElement("tr");
    const before = previousBusy[name];
    const busyNow = before === undefined || !seconds ? "-"
      : Math.min(100, 100 * (w.busy_seconds - before) / seconds).toFixed(0) + " %";
    previousBusy[name] = w.busy_seconds;
    cell(row, name);
    cell(row, w.num_job);
    cell(row, w.num_sentence);
    cell(row, w.busy_seconds.toFixed(2));
    cell(row, busyNow);
    body.appendChild(row);
  }
  if (!Object.keys(workers).length) {
    const row = document.createElement("tr");
    cell(row, "no job finished yet (" + server.num_ready_worker + " of " + server.num_worker
              + " ready)");
    body.appendChild(row);
  }
}

function drawChart() {
  // Newest sample at the right edge; each series is scaled to its own maximum.
  const canvas = document.getElementById("chart");
  const ratio = window.devicePixelRatio || 1;
  const w = canvas.clientWidth, h = canvas.clientHeight;
  canvas.width = w * ratio;
  canvas.height = h * ratio;
  const ctx = canvas.getContext("2d");
  ctx.scale(ratio, ratio);
  ctx.font = "12px system-ui, sans-serif";
  const series = [["rate", "#2563eb", "requests/s"], ["latency", "#d97706", "ms mean latency"]];
  series.forEach(([key, color, label], index) => {
    const values = samples.map(p => p[key]);
    const top = Math.max(...values, 1e-9);
    ctx.fillStyle = color;
    ctx.fillText(label + " (max " + (values.length ? top.toFixed(1) : "-") + ")",
                 8 + index * 240, 14);
    if (values.length < 2) return;
    ctx.strokeStyle = color;
    ctx.lineWidth = 2;
    ctx.beginPath();
    values.forEach((v, i) => {
      const x = w - 2 - (values.length - 1 - i) * (w - 4) / (MAX_SAMPLES - 1);
      const y = h - 4 - (v / top) * (h - 28);
      if (i === 0) ctx.moveTo(x, y); else ctx.lineTo(x, y);
    });
    ctx.stroke();
  });
}

async function getJson(url) {
  const response = await fetch(url, {cache: "no-store"});
  const body = await response.json();
  if (!response.ok) throw new Error(url + ": " + ((body.error || {}).message || response.status));
  return body;
}

async function refresh() {
  try {
    const [server, client] = await Promise.all([getJson("/status/server"),
                                                getJson("/status/client")]);
    const health = document.getElementById("health");
    const ready = server.num_ready_worker === server.num_worker;
    health.textContent = ready ? "ready"
      : server.num_ready_worker + " of " + server.num_worker + " workers ready";
    health.className = ready ? "ok" : "bad";
    text("model-id", client.model || server.model_dir);
    const now = performance.now() / 1000;
    const http = client.http;
    let seconds = 0;
    if (previous) {
      seconds = now - previous.time;
      const requests = http.encode_requests - previous.http.encode_requests;
      const rate = requests / seconds;
      const seconds_spent = http.encode_seconds - previous.http.encode_seconds;
      const latency = requests > 0 ? 1000 * seconds_spent / requests : 0;
      text("rate", rate.toFixed(2));
      if (requests > 0) text("latency", latency.toFixed(1));
      samples.push({rate: rate, latency: latency});
      if (samples.length > MAX_SAMPLES) samples.shift();
    }
    previous = {time: now, http: http};
    text("encode-requests", http.encode_requests);
    text("encode-sentences", http.encode_sentences);
    text("encode-errors", http.encode_errors);
    text("queued", server.num_queued_job);
    text("slots", client.http_requests_in_flight + " / " + client.http_max_connect);
    fillWorkers(server, seconds);
    fillConfig(server);
    drawChart();
    text("error", "");
    text("updated", new Date().toLocaleTimeString());
  } catch (error) {
    text("error", String(error.message || error));
    const health = document.getElementById("health");
    health.textContent = "unavailable";
    health.className = "bad";
  }
}

refresh();
setInterval(refresh, 1500);
</script>
</body>
</html>
"""
