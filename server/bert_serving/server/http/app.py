"""The FastAPI application: routes, error mapping and the HTML pages."""
import asyncio
import base64
import logging
from importlib.resources import files
from typing import TYPE_CHECKING

import numpy as np
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import HTMLResponse, Response
from fastapi.staticfiles import StaticFiles
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.middleware.cors import CORSMiddleware

from bert_serving.client import __version__
from .errors import (ApiError, Utf8JSONResponse, error_response, invalid, service_unavailable,
                     short_repr)
from .middleware import GuardMiddleware
from .schemas import (EmbeddingsResponse, EncodeResponse, HealthResponse, ModelCard, ModelList,
                      TokenizeResponse, _build_openapi, _error_responses, _request_body)
from .validation import (check_dimensions, is_json_media_type, media_type_of,
                         parse_embeddings_request, read_encode_request, read_json_object,
                         unsupported_media_type)

if TYPE_CHECKING:
    from .service import HttpService

# Seconds an endpoint waits for a status reply before returning 503.
STATUS_WAIT_S = 5
HEALTH_STATUS_WAIT_S = 2
METRICS_STATUS_WAIT_S = 2
DOCS_STATIC_URL = '/static-docs'
# The HTML pages load nothing from other hosts: ReDoc would fetch its logo from its CDN.
PAGE_CSP = ("default-src 'self'; script-src 'self' 'unsafe-inline'; "
            "style-src 'self' 'unsafe-inline'; img-src 'self' data:; font-src 'self' data:; "
            "worker-src 'self' blob:; connect-src 'self'")
DASHBOARD_HTML = (files(__package__) / 'static' / 'dashboard.html').read_text(encoding='utf-8')


def build_app(service: 'HttpService') -> FastAPI:
    app = FastAPI(title='bert-serving HTTP API', version=__version__, docs_url=None,
                  redoc_url=None, openapi_url='/openapi.json',
                  description='Sentence embeddings from a bert-serving server. Errors are '
                              '{"error": {"message", "type", "code"}}.')
    app.state.max_body_bytes = service.max_body_bytes
    app.state.requires_api_key = service.api_keys is not None
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
