"""The entry point of the HTTP process: sockets, the control protocol and uvicorn."""
import asyncio
import contextlib
import logging
import signal
import socket

import uvicorn
import zmq
import zmq.asyncio

from ..helper import set_logger
from ..process import die_with_parent, parent_is_alive
from ..sink import FAILED, READY, STOP
from .auth import ApiKeyFileError, ApiKeys, load_api_keys
from .service import HttpService, bind_address

IDENTITY = b'HTTP'


class _UvicornServer(uvicorn.Server):
    """A uvicorn server that ignores signals: the ventilator stops this process with STOP."""

    @contextlib.contextmanager
    def capture_signals(self):
        yield


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
        api_keys = None
        if message is None and getattr(args, 'http_api_key_file', None):
            try:
                api_keys = ApiKeys(load_api_keys(args.http_api_key_file))
            except ApiKeyFileError as error:
                message = str(error)
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
        await _serve(args, listener, control, context, logger, api_keys)
    finally:
        control.close()
        context.term()


async def _serve(args, listener, control, context, logger, api_keys):
    service = HttpService(args, context, logger, api_keys)
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
    if api_keys is not None:
        logger.info('every endpoint but GET /health requires one of the %d API keys in %s',
                    len(api_keys.keys), args.http_api_key_file)
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
