"""Prometheus metrics of the HTTP process and of the server's SHOW_STATUS statistics."""
from prometheus_client import (CollectorRegistry, Counter, Gauge, Histogram,
                               ProcessCollector)
from prometheus_client.core import (CounterMetricFamily, GaugeMetricFamily,
                                    HistogramMetricFamily)

LATENCY_BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
# Endpoints whose requests reach the workers; the dashboard counts these as encode requests.
ENCODE_ENDPOINTS = ('/encode', '/v1/embeddings')


class HttpMetrics:
    """Prometheus metrics of this process, plus the server's own statistics at scrape time."""

    def __init__(self, service):
        self.registry = CollectorRegistry()
        registry = self.registry
        self.requests = Counter('bert_serving_http_requests', 'HTTP requests completed',
                                ['endpoint', 'status'], registry=registry)
        self.sentences = Counter('bert_serving_http_sentences',
                                 'Sentences in valid HTTP requests', ['endpoint', 'status'],
                                 registry=registry)
        self.tokens = Counter('bert_serving_http_tokens',
                              'Tokens, [CLS] and [SEP] included, that the HTTP process counted '
                              'for /v1/embeddings usage and /tokenize', ['endpoint'],
                              registry=registry)
        self.errors = Counter('bert_serving_http_errors', 'HTTP error replies',
                              ['endpoint', 'code'], registry=registry)
        self.latency = Histogram('bert_serving_http_request_duration_seconds',
                                 'Time from receiving an HTTP request to the end of its reply',
                                 ['endpoint'], buckets=LATENCY_BUCKETS_S, registry=registry)
        self.in_flight = Gauge('bert_serving_http_requests_in_flight',
                               'HTTP requests in progress', registry=registry)
        self.slots_in_use = Gauge('bert_serving_http_slots_in_use',
                                  'Requests holding one of the -http_max_connect slots',
                                  registry=registry)
        self.slots_in_use.set_function(lambda: service.num_active)
        Gauge('bert_serving_http_max_connect', 'The -http_max_connect limit',
              registry=registry).set(service.max_active)
        registry.register(_ServerStatusCollector(service))
        ProcessCollector(registry=registry)

        # Totals of the encode endpoints, for the dashboard.
        self.encode_requests = 0
        self.encode_errors = 0
        self.encode_sentences = 0
        self.encode_seconds = 0.0

    def observe(self, endpoint, status, seconds, state):
        code = str(status)
        self.requests.labels(endpoint, code).inc()
        self.latency.labels(endpoint).observe(seconds)
        num_sentences = state.get('num_sentences', 0)
        if num_sentences:
            self.sentences.labels(endpoint, code).inc(num_sentences)
        if state.get('num_tokens'):
            self.tokens.labels(endpoint).inc(state['num_tokens'])
        if status >= 400:
            self.errors.labels(endpoint, state.get('error_code', 'http_%d' % status)).inc()
        if endpoint in ENCODE_ENDPOINTS:
            self.encode_requests += 1
            self.encode_errors += status >= 400
            self.encode_sentences += num_sentences if status < 400 else 0
            self.encode_seconds += seconds

    @property
    def summary(self):
        return {'encode_requests': self.encode_requests, 'encode_errors': self.encode_errors,
                'encode_sentences': self.encode_sentences,
                'encode_seconds': self.encode_seconds}


class _ServerStatusCollector:
    """Metrics read from the SHOW_STATUS document that /metrics fetched for this scrape."""

    def __init__(self, service):
        self.service = service

    def collect(self):
        status = self.service.scrape_status
        yield GaugeMetricFamily('bert_serving_server_up', '1 when the server replied to the '
                                'status request of this scrape, else 0', value=int(bool(status)))
        if not status:
            return
        yield GaugeMetricFamily('bert_serving_workers', 'Workers the server runs (-num_worker)',
                                value=status.get('num_worker', 0))
        yield GaugeMetricFamily('bert_serving_ready_workers', 'Workers ready for jobs',
                                value=status.get('num_ready_worker', 0))
        yield GaugeMetricFamily('bert_serving_queued_jobs', 'Jobs waiting in the ventilator',
                                value=status.get('num_queued_job', 0))
        yield GaugeMetricFamily('bert_serving_in_flight_jobs', 'Jobs sent to workers and not '
                                'finished', value=status.get('num_in_flight_job', 0))
        statistic = status.get('statistic', {})
        yield CounterMetricFamily('bert_serving_server_requests',
                                  'Encode requests the server took from all clients',
                                  value=statistic.get('num_data_request', 0))
        yield CounterMetricFamily('bert_serving_server_sentences', 'Sentences the server took '
                                  'from all clients', value=statistic.get('num_total_seq', 0))

        workers = status.get('workers', {})
        jobs = CounterMetricFamily('bert_serving_worker_jobs', 'Jobs a worker finished',
                                   labels=['worker'])
        sentences = CounterMetricFamily('bert_serving_worker_sentences',
                                        'Sentences a worker encoded', labels=['worker'])
        busy = CounterMetricFamily('bert_serving_worker_busy_seconds',
                                   'Seconds a worker spent computing jobs', labels=['worker'])
        for name, stats in sorted(workers.items()):
            jobs.add_metric([name], stats.get('num_job', 0))
            sentences.add_metric([name], stats.get('num_sentence', 0))
            busy.add_metric([name], stats.get('busy_seconds', 0.0))
        yield jobs
        yield sentences
        yield busy

        counts = sorted((float(bound), count)
                        for bound, count in status.get('batch_size_histogram', {}).items())
        cumulative, buckets = 0, []
        for bound, count in counts:
            cumulative += count
            buckets.append(('+Inf' if bound == float('inf') else '%g' % bound, cumulative))
        if not buckets or buckets[-1][0] != '+Inf':
            buckets.append(('+Inf', cumulative))
        total_rows = sum(stats.get('num_sentence', 0) for stats in workers.values())
        yield HistogramMetricFamily('bert_serving_batch_size', 'Sentences per job sent to a '
                                    'worker', buckets=buckets, sum_value=total_rows)
