"""Error replies of the HTTP API: ApiError, its JSON body and the exceptions behind them."""
import json

from fastapi.responses import JSONResponse

RETRY_AFTER_S = 1
SHORT_REPR_CHARS = 60


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
