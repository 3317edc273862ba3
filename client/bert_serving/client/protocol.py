"""Frames and commands of the bert-as-service 1.10.0 wire protocol, shared by client and server.

A request from a client to the ventilator (PUSH to PULL) has four frames:

    [client identity, payload, request id, payload length]

where the payload is either a JSON list of sentences (or of token lists), or one of the
command words below, and request id and length are ASCII decimal integers.

The sink publishes each reply (PUB to SUB, topic = client identity) as

    [client identity, JSON header, raw array buffer, request id]    for an encode request
    [client identity, JSON document, request id]                    for SHOW_CONFIG / SHOW_STATUS

The header carries `dtype` and `shape` of the row-major array buffer and `tokens` (a list of
token lists, or '' when the server does not show tokens). An error reply is an encode reply
whose header has an `error` object instead of `dtype` and whose buffer frame is empty. The
original 1.10.0 client has no notion of it, so it raises a KeyError on the missing `dtype`.
"""
import json

import numpy as np

TERMINATION = b'TERMINATION'
SHOW_CONFIG = b'SHOW_CONFIG'
SHOW_STATUS = b'SHOW_STATUS'

COMMANDS = (TERMINATION, SHOW_CONFIG, SHOW_STATUS)


def encode_header(obj) -> bytes:
    return json.dumps(obj, ensure_ascii=False).encode('utf-8')


def decode_header(frame: bytes):
    return json.loads(bytes(frame).decode('utf-8'))


def array_to_frames(array: np.ndarray, tokens=''):
    """Return the (header, buffer) frame pair for `array`; the buffer is the array's own memory."""
    array = np.ascontiguousarray(array)
    header = {'dtype': str(array.dtype), 'shape': list(array.shape), 'tokens': tokens}
    return encode_header(header), memoryview(array).cast('B')


def frames_to_array(header: dict, buffer) -> np.ndarray:
    """Rebuild an array from a decoded header and its raw buffer frame, without copying."""
    return np.frombuffer(memoryview(buffer), dtype=str(header['dtype'])).reshape(header['shape'])


def error_header(message: str, error_type: str) -> bytes:
    return encode_header({'error': {'message': message, 'type': error_type}})
