"""ZeroMQ CURVE encryption and client authentication for the request and result ports.

Keys are the certificate files of `zmq.auth`: `NAME.key` contains a public key and
`NAME.key_secret` a public and a secret key. The server takes its own secret key file and a
directory of the public key files of the clients it accepts. Each client takes the
server's public key file and its own secret key file. A client whose key is not in the
directory never completes the handshake, so it cannot send requests or read results.
"""
import logging
import os

import zmq
import zmq.auth
from zmq.auth.thread import ThreadAuthenticator


class _AllowedKeys:
    """The credentials provider of the authenticator: accepts the keys found in one directory."""

    def __init__(self, directory, logger):
        self.allowed = set(zmq.auth.load_certificates(directory))
        self.logger = logger

    def callback(self, domain, key):
        if key in self.allowed:
            return True
        self.logger.warning('rejected a client with unknown CURVE public key %s',
                            key.decode('ascii', errors='replace'))
        return False


def check_curve_args(args):
    """Raise ValueError unless the CURVE flags name readable files, or are both unset."""
    if bool(args.curve_secret_key) != bool(args.curve_allowed_keys):
        raise ValueError('-curve_secret_key and -curve_allowed_keys go together: pass both to '
                         'enable CURVE, or neither')
    if args.curve_secret_key:
        if not os.path.isfile(args.curve_secret_key):
            raise ValueError('CURVE secret key file %s not found' % args.curve_secret_key)
        if not os.path.isdir(args.curve_allowed_keys):
            raise ValueError('CURVE allowed keys directory %s not found' % args.curve_allowed_keys)
        public, secret = zmq.auth.load_certificate(args.curve_secret_key)
        if secret is None:
            raise ValueError('%s contains no secret key; pass the .key_secret file'
                             % args.curve_secret_key)


def secure_server_socket(context, socket, args, logger: logging.Logger):
    """Turn on CURVE for a server socket before it binds; return the authenticator or None.

    The authenticator is a thread of `context`; stop it before terminating the context.
    """
    if not args.curve_secret_key:
        return None
    authenticator = ThreadAuthenticator(context, log=logger)
    authenticator.start()
    authenticator.configure_curve_callback('*', _AllowedKeys(args.curve_allowed_keys, logger))
    public, secret = zmq.auth.load_certificate(args.curve_secret_key)
    socket.curve_secretkey = secret
    socket.curve_publickey = public
    socket.curve_server = True
    return authenticator


def generate_keys(directory, names=('server', 'client')):
    """Write a key pair for each name into `directory` and return the file paths."""
    os.makedirs(directory, exist_ok=True)
    return [zmq.auth.create_certificates(directory, name) for name in names]
