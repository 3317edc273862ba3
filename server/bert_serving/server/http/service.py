"""State shared by the endpoints: the ZeroMQ client, the server configuration and the limits."""
import asyncio
import contextlib
import os
import time
from concurrent.futures import ThreadPoolExecutor

from ..model_dir import ModelDirError, default_model_dir
from ..tokenization import BertTokenizer
from .app import build_app
from .errors import RETRY_AFTER_S, ApiError, ServerRejection, invalid, service_unavailable
from .metrics import HttpMetrics
from .zmq_client import ENCODE_TIMEOUT_S, STATUS_REQUEST_TIMEOUT_S, AsyncBertClient

# The model id that /v1/models reports for the embedded all-MiniLM-L6-v2 model, whose
# directory is only called "model".
DEFAULT_MODEL_ID = 'all-MiniLM-L6-v2'


class HttpService:
    """State shared by the endpoints: the ZeroMQ client, the server configuration, limits."""

    def __init__(self, args, context, logger, api_keys=None):
        self.args = args
        self.logger = logger
        self.api_keys = api_keys  # an ApiKeys, or None when -http_api_key_file is not set
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


def bind_address(args):
    """Return the address the HTTP port binds to: the server's -ip, where '*' (the default)
    means all interfaces, like the ZeroMQ ports."""
    ip = getattr(args, 'ip', None)
    return '0.0.0.0' if ip in (None, '', '*') else ip


def server_address(args):
    """Return the address at which this process reaches the server's ZeroMQ ports."""
    address = bind_address(args)
    return '127.0.0.1' if address == '0.0.0.0' else address
