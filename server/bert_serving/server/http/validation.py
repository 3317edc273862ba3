"""Parse and validate request bodies by hand, so that every 400 names the bad element."""
import json
from urllib.parse import parse_qsl

from fastapi import Request
from starlette.datastructures import UploadFile

from .errors import ApiError, invalid, short_repr

MAX_FORM_FIELDS = 1_000_000


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
