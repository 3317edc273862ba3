"""Console entry points: bert-serving-start and bert-serving-terminate."""
import signal
import sys


def main(argv=None):
    """Start the server and block until it stops; exit non-zero when it fails."""
    from . import BertServer
    from .helper import get_args_parser, set_logger
    from .model_dir import ModelDirError

    args = get_args_parser().parse_args(argv)
    logger = set_logger('VENTILATOR', args.verbose)
    try:
        server = BertServer(args)
    except (ModelDirError, ValueError, OSError) as error:
        logger.error('cannot start: %s', error)
        sys.exit(1)

    def request_stop(signum, _frame):
        logger.info('received %s, shutting down', signal.Signals(signum).name)
        server._stop_requested.set()

    signal.signal(signal.SIGINT, request_stop)
    signal.signal(signal.SIGTERM, request_stop)
    server.start()
    # join() with a timeout keeps the main thread responsive to signals.
    while server.is_alive():
        server.join(0.5)
    sys.exit(server.exit_code or 0)


def terminate(argv=None):
    """Send TERMINATION to a running server."""
    from . import BertServer
    from .helper import get_shutdown_parser

    args = get_shutdown_parser().parse_args(argv)
    try:
        BertServer.shutdown(args)
    except TimeoutError as error:
        print(error, file=sys.stderr)
        sys.exit(1)
    print('shutdown signal sent to %s:%d' % (args.ip, args.port))


def keygen(argv=None):
    """Write CURVE key pairs for a server and its clients (bert-serving-keygen)."""
    import argparse

    from .security import generate_keys

    parser = argparse.ArgumentParser(
        prog='bert-serving-keygen',
        description='Write ZeroMQ CURVE key pairs: NAME.key (public) and NAME.key_secret.')
    parser.add_argument('directory', help='directory to write the key files to')
    parser.add_argument('-names', nargs='+', default=['server', 'client'],
                        help='one key pair per name')
    args = parser.parse_args(argv)
    for public_file, secret_file in generate_keys(args.directory, args.names):
        print('wrote %s and %s' % (public_file, secret_file))


if __name__ == '__main__':
    main()
