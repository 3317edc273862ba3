"""Optional API keys (-http_api_key_file): load the key file and check Authorization headers."""
import hmac
import string

from .errors import ApiError

# Requests that need no key: the health check, so that load balancers can probe without one,
# and the pages and the OpenAPI schema, which contain no model, configuration or statistics.
# The dashboard reads the key from its URL fragment and sends it with each of its requests.
OPEN_PATHS = frozenset(['/health', '/', '/docs', '/redoc', '/openapi.json'])
OPEN_PATH_PREFIXES = ('/static-docs/',)
OPEN_METHODS = ('GET', 'HEAD')
# The characters of an RFC 6750 bearer token (b64token), so that every key fits the header.
KEY_CHARACTERS = frozenset(string.ascii_letters + string.digits + '-._~+/=')


class ApiKeyFileError(Exception):
    """The -http_api_key_file cannot be read or contains no valid key."""


def load_api_keys(path):
    """Read one key per line from `path`, skipping blank lines and lines that start with #.

    Raises:
        ApiKeyFileError: the file cannot be read, contains no key, or a key has characters
            that a bearer token cannot contain. The message names the line, never the key.
    """
    try:
        with open(path, encoding='utf-8') as f:
            lines = f.read().splitlines()
    except OSError as error:
        raise ApiKeyFileError('cannot read -http_api_key_file %s: %s'
                              % (path, error.strerror or error)) from None
    except UnicodeDecodeError:
        raise ApiKeyFileError('-http_api_key_file %s is not UTF-8 text' % path) from None
    keys = []
    for number, line in enumerate(lines, 1):
        key = line.strip()
        if not key or key.startswith('#'):
            continue
        if not set(key) <= KEY_CHARACTERS:
            raise ApiKeyFileError('invalid key on line %d of -http_api_key_file %s: a key may '
                                  'contain only letters, digits and -._~+/=' % (number, path))
        keys.append(key.encode('ascii'))
    if not keys:
        raise ApiKeyFileError('-http_api_key_file %s contains no key: write one key per line'
                              % path)
    return keys


class ApiKeys:
    """The accepted keys, and the check of one request's Authorization header against them."""

    def __init__(self, keys):
        self.keys = list(keys)

    @staticmethod
    def is_open(scope):
        """Return True for the requests that need no key (see OPEN_PATHS)."""
        path = scope.get('path', '')
        return scope.get('method') in OPEN_METHODS and (
            path in OPEN_PATHS or path.startswith(OPEN_PATH_PREFIXES))

    def check(self, scope):
        """Return None when the request carries a valid key, else the 401 ApiError to send.

        Only the Authorization header is read: a key in the query string is ignored, because
        URLs end up in logs and browser histories.
        """
        header = None
        for name, value in scope.get('headers', ()):
            if name == b'authorization':
                header = value
                break
        if header is None:
            return unauthorized('missing API key: send the header Authorization: Bearer <key>',
                                'missing_api_key')
        scheme, _, token = header.strip().partition(b' ')
        if scheme.lower() != b'bearer':
            return unauthorized('the Authorization header must use the Bearer scheme: '
                                'Authorization: Bearer <key>', 'invalid_api_key')
        token = token.strip()
        # Compare with every key, without stopping at a match, so that the reply time does
        # not depend on which key matched or on how much of a key was right.
        matched = False
        for key in self.keys:
            matched |= hmac.compare_digest(token, key)
        if not matched:
            return unauthorized('invalid API key: the key is not in -http_api_key_file',
                                'invalid_api_key')
        return None


def unauthorized(message, metric_code):
    """Build the 401 reply. `metric_code` labels the error in /metrics, where the JSON body
    has the numeric code 401."""
    error = ApiError(401, message, 'authentication_error', 401, {'WWW-Authenticate': 'Bearer'})
    error.metric_code = metric_code
    return error
