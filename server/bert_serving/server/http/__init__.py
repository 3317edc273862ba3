"""The HTTP process: a JSON API, an OpenAI-compatible embeddings endpoint and a dashboard.

With `-http_port N` the ventilator starts this process next to the sink. It serves HTTP
with FastAPI on uvicorn and reaches the workers as an ordinary client of the server. One
asyncio ZeroMQ client pushes requests to the ventilator on `-port` and subscribes to the
sink on `-port_out` with its own identity, at 127.0.0.1 unless -ip names one address. Any
number of HTTP requests can therefore wait for their replies at once, matched by request
id.

Endpoints:

    POST /encode            {"id", "texts", "is_tokenized"} -> {"id", "result"} (1.10.0 API)
    POST /v1/embeddings     the OpenAI embeddings API
    GET  /v1/models         the served model, in the OpenAI format
    POST /tokenize          the tokens each text becomes under the server's settings
    GET  /status/server     the SHOW_STATUS document of the ZeroMQ API
    GET  /status/client     the state of this process's ZeroMQ client and its HTTP counters
    GET  /health            200 once every worker is ready, else 503
    GET  /metrics           Prometheus text format
    GET  /openapi.json, /docs, /redoc, and / (the dashboard)

Control protocol with the ventilator, like the sink's: a DEALER with identity b'HTTP' sends
[READY, b'{}'] once the HTTP port is bound and listening, or [FAILED, message] when the
port cannot be bound or a flag is invalid. [STOP] from the ventilator ends the process.

With -http_api_key_file, every request but GET /health and the HTML pages (/, /docs, /redoc,
/openapi.json and their assets) must carry `Authorization: Bearer <key>`, else it gets 401.

Modules: process (the entry point and uvicorn), service (state shared by the endpoints),
app (routes and error mapping), middleware (API key, body limit, metrics per request), auth
(the key file and the header check), validation and schemas (request bodies), zmq_client
(the asyncio ZeroMQ client), metrics (Prometheus), errors (the JSON error replies), and
static/dashboard.html (the page at /).

NOTE: READY cannot wait for the server configuration, because the ventilator replies to
SHOW_STATUS only after every child, this one included, has sent READY. The process
therefore fetches the configuration right after READY and returns 503 until it has it.
"""
from .process import run_http

__all__ = ['run_http']
