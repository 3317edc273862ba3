"""The original bert-serving-client 1.10.0 from PyPI, talking to this server.

The original package owns the same import path as ours, so it is installed into its own
directory and driven from a subprocess that puts that directory first on sys.path.
"""
import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from conftest import ServerProcess

TOLERANCE = 1e-5
SENTENCES = ['First do it', 'then do it right', '今天天气很好']

ORIGINAL_CLIENT_SCRIPT = textwrap.dedent('''
    import json, sys
    sys.path.insert(0, sys.argv[1])
    import bert_serving.client as original
    from bert_serving.client import BertClient
    assert original.__version__ == '1.10.0', original.__version__
    assert original.__file__.startswith(sys.argv[1]), original.__file__

    port, port_out = int(sys.argv[2]), int(sys.argv[3])
    sentences = json.loads(sys.argv[4])
    result = {'client_file': original.__file__}
    bc = BertClient(ip='127.0.0.1', port=port, port_out=port_out, check_version=False,
                    timeout=120000)
    result['texts'] = bc.encode(sentences).tolist()
    result['tokenized'] = bc.encode([s.split() for s in sentences], is_tokenized=True).tolist()
    vectors, tokens = bc.encode(sentences, show_tokens=True)
    result['tokens'] = tokens
    result['status_keys'] = sorted(bc.server_status)
    for s in sentences:
        bc.encode([s], blocking=False)
    result['fetch_all'] = bc.fetch_all(concat=True).tolist()
    bc.close()
    print(json.dumps(result))
''')


@pytest.fixture(scope='module')
def original_client_dir(tmp_path_factory):
    target = str(tmp_path_factory.mktemp('bert-serving-client-1.10.0'))
    subprocess.run([sys.executable, '-m', 'pip', 'install', '--quiet', '--no-deps',
                    '--target', target, 'bert-serving-client==1.10.0'], check=True, timeout=300)
    return target


@pytest.fixture(scope='module')
def token_server():
    process = ServerProcess('-show_tokens_to_client')
    yield process
    process.stop()


def test_original_client_against_server(original_client_dir, token_server):
    completed = subprocess.run(
        [sys.executable, '-c', ORIGINAL_CLIENT_SCRIPT, original_client_dir,
         str(token_server.port), str(token_server.port_out), json.dumps(SENTENCES)],
        capture_output=True, text=True, timeout=300)
    assert completed.returncode == 0, completed.stderr[-3000:]
    result = json.loads(completed.stdout.strip().splitlines()[-1])
    assert result['client_file'].startswith(original_client_dir)

    with token_server.client() as bc:
        expected, expected_tokens = bc.encode(SENTENCES, show_tokens=True)
        expected_tokenized = bc.encode([s.split() for s in SENTENCES], is_tokenized=True)

    assert np.abs(np.array(result['texts']) - expected).max() < TOLERANCE
    assert np.abs(np.array(result['tokenized']) - expected_tokenized).max() < TOLERANCE
    assert np.abs(np.array(result['fetch_all']) - expected).max() < TOLERANCE
    assert result['tokens'] == expected_tokens
    assert 'statistic' in result['status_keys']
    assert 'server_version' in result['status_keys']
