"""Request handling in the ventilator: validation, tokenization and cutting into jobs.

The ventilator tokenizes in the main process, so workers receive ready-made int32 arrays
and spend their time on the forward pass only. Tokenizing the next request also overlaps
the forward pass of the current one. `batching` cuts the tokenized request into jobs of
similar length; the sink puts the rows back in request order.
"""
import json
import time
from collections import defaultdict
from typing import List, Optional


from .batching import cut_into_jobs
from .tokenization import BertTokenizer

# Characters of a bad element quoted back in an error message.
_REPR_LIMIT = 60


class RequestError(ValueError):
    """A request the server rejects; the message goes back to the client."""

    def __init__(self, message, error_type='invalid_request'):
        super().__init__(message)
        self.error_type = error_type


def _short_repr(value):
    text = repr(value)
    return text if len(text) <= _REPR_LIMIT else text[:_REPR_LIMIT - 3] + '...'


def parse_payload(payload: bytes, msg_len: int):
    """Decode and validate the JSON payload of an encode request.

    Returns:
        (texts, is_tokenized): a list of strings, or of token lists when is_tokenized.

    Raises:
        RequestError: the payload is not a non-empty JSON list of non-empty strings, nor of
            non-empty lists of non-empty strings, or `msg_len` does not match its size.
    """
    try:
        texts = json.loads(bytes(payload).decode('utf-8'))
    except UnicodeDecodeError as error:
        raise RequestError('invalid request: the payload is not UTF-8 (%s)' % error) from None
    except ValueError as error:
        raise RequestError('invalid request: the payload is not valid JSON (%s)' % error) from None

    if not isinstance(texts, list):
        raise RequestError('invalid request: expected a JSON list of strings, but got %s: %s'
                           % (type(texts).__name__, _short_repr(texts)))
    if not texts:
        raise RequestError('invalid request: the list of sentences is empty')
    if msg_len != len(texts):
        raise RequestError('invalid request: the length frame says %d sentences but the payload '
                           'has %d' % (msg_len, len(texts)))

    is_tokenized = isinstance(texts[0], list)
    for idx, item in enumerate(texts):
        if is_tokenized:
            _check_token_list(idx, item)
        elif not isinstance(item, str):
            raise RequestError('invalid request: element %d must be a string, but got %s: %s'
                               % (idx, type(item).__name__, _short_repr(item)))
        elif not item.strip():
            raise RequestError('invalid request: element %d is empty or only whitespace: %s'
                               % (idx, _short_repr(item)))
    return texts, is_tokenized


def _check_token_list(idx, item):
    if not isinstance(item, list):
        raise RequestError('invalid request: element %d must be a list of tokens like the '
                           'elements before it, but got %s: %s'
                           % (idx, type(item).__name__, _short_repr(item)))
    if not item:
        raise RequestError('invalid request: element %d is an empty token list' % idx)
    for jdx, token in enumerate(item):
        if not isinstance(token, str) or not token.strip():
            raise RequestError('invalid request: token %d of element %d must be a non-empty '
                               'string, but got %s' % (jdx, idx, _short_repr(token)))


def plan_request(client, req_id, texts, is_tokenized, tokenizer: BertTokenizer,
                 max_batch_size, max_batch_tokens, buckets, with_tokens,
                 fixed_out_len: Optional[int]):
    """Tokenize a request and cut it into jobs (see `batching.cut_into_jobs`).

    Returns:
        (jobs, register): the list of Jobs and the REGISTER document for the sink, which
        has the part count, the row order when rows were sorted, the tokens when
        `with_tokens`, and `out_len`, the token axis of token-level (NONE) output.
    """
    if is_tokenized:
        batch = tokenizer.encode_tokens(texts, with_tokens)
    else:
        batch = tokenizer.encode_texts(texts, with_tokens)
    jobs, order = cut_into_jobs(client, req_id, batch.input_ids, batch.segment_ids,
                                max_batch_size, max_batch_tokens, buckets)
    register = {
        'num_parts': len(jobs),
        'num_rows': len(texts),
        'order': order.tolist() if order is not None else None,
        'tokens': batch.tokens,
        'out_len': fixed_out_len or int(batch.lengths.max()),
    }
    return jobs, register


class ServerStatistic:
    """Request statistics in the form of the 1.10.0 `statistic` field of SHOW_STATUS."""

    # A client counts as active when its last request is this recent.
    ACTIVE_WINDOW_S = 180
    MAX_INTERVALS = 200
    # Upper bounds of the batch size histogram; the last one catches everything.
    BATCH_SIZE_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, float('inf'))

    def __init__(self):
        self._requests_per_client = defaultdict(int)
        self._last_active = {}
        self._sizes = defaultdict(int)
        self._num_data_req = 0
        self._num_sys_req = 0
        self._num_total_seq = 0
        self._last_req_time = time.perf_counter()
        self._intervals = []
        self.workers = {}  # worker name -> {'num_job', 'num_sentence', 'busy_seconds'}
        self.batch_sizes = {}  # bucket upper bound (as a string) -> number of jobs

    def record_batch(self, worker, num_rows, busy_seconds):
        """Count one finished batch of `num_rows` sentences that kept `worker` busy."""
        stats = self.workers.setdefault(worker, {'num_job': 0, 'num_sentence': 0,
                                                 'busy_seconds': 0.0})
        stats['num_job'] += 1
        stats['num_sentence'] += num_rows
        stats['busy_seconds'] += busy_seconds
        bucket = next(b for b in self.BATCH_SIZE_BUCKETS if num_rows <= b)
        self.batch_sizes[str(bucket)] = self.batch_sizes.get(str(bucket), 0) + 1

    def update(self, client, is_command, msg_len):
        self._requests_per_client[client] += 1
        if is_command:
            self._num_sys_req += 1
            return
        now = time.perf_counter()
        self._sizes[msg_len] += 1
        self._num_total_seq += msg_len
        self._num_data_req += 1
        self._last_active[client] = now
        self._intervals.append(now - self._last_req_time)
        if len(self._intervals) > self.MAX_INTERVALS:
            self._intervals.pop(0)
        self._last_req_time = now

    @staticmethod
    def _min_max_avg(name, values: List[float], avg=None):
        if not values:
            return {}
        avg = sum(values) / len(values) if avg is None else avg
        low, high = min(values), max(values)
        return {'avg_%s' % name: avg, 'min_%s' % name: low, 'max_%s' % name: high,
                'num_min_%s' % name: sum(v == low for v in values),
                'num_max_%s' % name: sum(v == high for v in values)}

    @property
    def value(self):
        now = time.perf_counter()
        stats = {
            'num_data_request': self._num_data_req,
            'num_total_seq': self._num_total_seq,
            'num_sys_request': self._num_sys_req,
            'num_total_request': self._num_data_req + self._num_sys_req,
            'num_total_client': len(self._requests_per_client),
            'num_active_client': sum(1 for t in self._last_active.values()
                                     if now - t < self.ACTIVE_WINDOW_S),
        }
        stats.update(self._min_max_avg('request_per_client',
                                       list(self._requests_per_client.values())))
        if self._sizes:
            avg_size = self._num_total_seq / self._num_data_req
            stats.update(self._min_max_avg('size_per_request', list(self._sizes), avg=avg_size))
        stats.update(self._min_max_avg('last_two_interval', self._intervals))
        stats.update(self._min_max_avg('request_per_second',
                                       [1.0 / v for v in self._intervals if v > 0]))
        return stats
