"""Write BERT weights as a Google-format model directory (TF1 name-based checkpoint).

The result is what Google's BERT releases contain, `bert_config.json`, `vocab.txt` and
`bert_model.ckpt.index` / `.data-00000-of-00001`, with variables named `bert/embeddings/...`
and `bert/encoder/layer_N/...`, so that bert-as-service 1.10.0, Google's own scripts and
this server all read it.
"""
import dataclasses
import json
import os
import shutil
from typing import Dict, Optional

import numpy as np

from .model_dir import BertConfig


def save_checkpoint(weights: Dict[str, np.ndarray], prefix: str):
    """Save arrays under their names as a checkpoint at `prefix` (prefix.index, prefix.data-*)."""
    import tensorflow as tf
    names = sorted(weights)
    os.makedirs(os.path.dirname(os.path.abspath(prefix)), exist_ok=True)
    tf.raw_ops.SaveV2(prefix=prefix, tensor_names=names, shape_and_slices=[''] * len(names),
                      tensors=[tf.constant(weights[n]) for n in names])


def write_google_model_dir(weights: Dict[str, np.ndarray], config: BertConfig, vocab_file: str,
                           out_dir: str, ckpt_name='bert_model.ckpt',
                           config_name='bert_config.json', extra: Optional[dict] = None):
    """Write a complete Google-format model directory and return its path."""
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, config_name), 'w', encoding='utf-8') as f:
        json.dump(dataclasses.asdict(config), f, indent=2)
    shutil.copyfile(vocab_file, os.path.join(out_dir, 'vocab.txt'))
    save_checkpoint({**weights, **(extra or {})}, os.path.join(out_dir, ckpt_name))
    return out_dir
