"""The ASGI middleware that guards every request: API key, body size limit, JSON 500s, metrics."""
import time
from typing import TYPE_CHECKING

from starlette.routing import Match

from .errors import ApiError, BodyTooLarge, error_response

if TYPE_CHECKING:
    from .service import HttpService

# Bytes of an oversized body read and discarded before the 413 reply, so that the
# client can read the reply instead of seeing the connection reset under its upload.
DRAIN_LIMIT_BYTES = 16 * 1024 * 1024


class GuardMiddleware:
    """Enforce -http_api_key_file and -http_max_body_mb, turn unexpected exceptions into JSON
    500s, record metrics."""

    def __init__(self, app, service: 'HttpService'):
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
            auth_error = None
            if service.api_keys is not None and not service.api_keys.is_open(scope):
                auth_error = service.api_keys.check(scope)
            if auth_error is not None:
                await self._reject_unauthorized(scope, receive, send_and_record, state,
                                                auth_error)
            elif self._declared_length(scope) > service.max_body_bytes:
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

    async def _reject_unauthorized(self, scope, receive, send, state, error):
        state['error_code'] = error.metric_code
        client = scope.get('client') or ('unknown', 0)
        # The log names the client and the reason, never the header's value.
        self.service.logger.info('%s %s from %s -> 401: %s', scope.get('method'),
                                 scope.get('path'), client[0], error.metric_code)
        if not self._expects_continue(scope):
            await self._drain(receive, 0)
        response = error_response(error)
        response.headers['Connection'] = 'close'
        await response(scope, receive, send)
