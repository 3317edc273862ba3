"""Pydantic models and the OpenAPI schema that document the request and reply bodies."""
from typing import Annotated, Any, List, Literal, Optional, Union

from fastapi.openapi.utils import get_openapi
from pydantic import BaseModel, Field, StringConstraints

# OpenAPI models document the bodies. The endpoints validate by hand so that every error
# names the bad element and has the shape of ErrorResponse.

NonBlankText = Annotated[str, StringConstraints(pattern=r'\S')]
TextList = Annotated[List[NonBlankText], Field(min_length=1)]
TokenLists = Annotated[List[TextList], Field(min_length=1)]


class ErrorDetail(BaseModel):
    message: str
    type: str
    code: Union[str, int] = Field(..., description='a string such as "invalid_value", or the '
                                                   'number 401 for a missing or invalid API key')


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
    if app.state.requires_api_key:
        _declare_bearer_auth(schema)
    app.openapi_schema = schema
    return schema


def _declare_bearer_auth(schema):
    """Require the bearer scheme on every operation but GET /health, with its 401 reply."""
    schema['components']['securitySchemes'] = {'bearerAuth': {
        'type': 'http', 'scheme': 'bearer',
        'description': 'one of the keys in the server\'s -http_api_key_file'}}
    schema['security'] = [{'bearerAuth': []}]
    unauthorized = {'description': 'missing or invalid API key',
                    'headers': {'WWW-Authenticate': {'schema': {'type': 'string'}}},
                    'content': {'application/json': {
                        'schema': {'$ref': '#/components/schemas/ErrorResponse'}}}}
    for path, operations in schema['paths'].items():
        for method, operation in operations.items():
            if path == '/health' and method == 'get':
                operation['security'] = []
            else:
                operation['responses']['401'] = unauthorized
