"""The parts that pre-training and fine-tuning share: loading the start model, the AdamW
optimizer with warm-up and linear decay, progress logs, the resume checkpoint and the
Google-format output directory.
"""
import argparse
import os
import re
import signal
import time
from typing import Dict

import keras
import numpy as np
import tensorflow as tf

from ..checkpoint import write_google_model_dir
from ..model_dir import ModelSpec, inspect_model_dir, load_weights
from ..tokenization import BertTokenizer

RESUME_DIR = 'resume'
STATE_FILE = 'checkpoint'
CKPT_PREFIX = 'model.ckpt'


def load_start_model(args, logger):
    """Inspect and read the model named by -model_dir (the embedded model when unset).

    Returns:
        (spec, weights, tokenizer): the ModelSpec, the Google-named encoder weights
        (tuned weights applied) and a tokenizer that cuts at -max_seq_len.
    """
    model_args = argparse.Namespace(model_dir=args.model_dir, config_name=args.config_name,
                                    ckpt_name=args.ckpt_name,
                                    tuned_model_dir=args.tuned_model_dir,
                                    do_lower_case=not args.cased_tokenization)
    spec = inspect_model_dir(model_args, logger)
    if args.max_seq_len > spec.config.max_position_embeddings:
        raise ValueError('invalid -max_seq_len %d: the model has only %d position embeddings'
                         % (args.max_seq_len, spec.config.max_position_embeddings))
    weights = load_weights(spec)
    tokenizer = BertTokenizer(spec.vocab_file, spec.do_lower_case, args.max_seq_len)
    logger.info('start model: %s (%s layout, %d layers, hidden size %d)%s', spec.model_dir,
                spec.layout, spec.config.num_hidden_layers, spec.config.hidden_size,
                ', tuned weights from %s' % spec.tuned_checkpoint if spec.tuned_checkpoint else '')
    return spec, weights, tokenizer


class WarmupLinearDecay(keras.optimizers.schedules.LearningRateSchedule):
    """Learning rate that rises linearly from 0 over `warmup_steps`, then falls linearly to 0
    at `total_steps`, as in BERT's optimization.py."""

    def __init__(self, peak, warmup_steps, total_steps):
        self.peak = float(peak)
        self.warmup_steps = int(warmup_steps)
        self.total_steps = max(int(total_steps), 1)

    def __call__(self, step):
        step = tf.cast(step, tf.float32)
        warmup = self.peak * (step + 1) / max(self.warmup_steps, 1)
        decay = self.peak * tf.maximum(0.0, (self.total_steps - step)
                                       / max(self.total_steps - self.warmup_steps, 1))
        return tf.where(step < self.warmup_steps, warmup, decay)

    def get_config(self):
        return {'peak': self.peak, 'warmup_steps': self.warmup_steps,
                'total_steps': self.total_steps}


def make_optimizer(args, total_steps):
    """Return AdamW with warm-up, linear decay and global-norm clipping at 1.0; LayerNorm
    parameters and biases get no weight decay, as in BERT."""
    schedule = WarmupLinearDecay(args.learning_rate, round(total_steps * args.warmup_proportion),
                                 total_steps)
    optimizer = keras.optimizers.AdamW(learning_rate=schedule, weight_decay=args.weight_decay,
                                       beta_1=0.9, beta_2=0.999, epsilon=1e-6,
                                       global_clipnorm=1.0)
    optimizer.exclude_from_weight_decay(var_names=['LayerNorm', 'bias', 'output_bias'])
    return optimizer


def build_optimizer(optimizer, model):
    """Create the optimizer's slot variables now, so that the train step is traced once."""
    optimizer.build(model.trainable_variables)


class ResumeState:
    """The tf.train.Checkpoint of model, optimizer and loop counters in OUTPUT_DIR/resume/.

    `values` contains the int64/float32 scalar tf.Variables that the caller defines (step,
    epoch, best score, ...), which are saved and restored with the model and the optimizer.
    """

    def __init__(self, output_dir, model, optimizer, **values):
        self.directory = os.path.join(output_dir, RESUME_DIR)
        self.values = values
        self.checkpoint = tf.train.Checkpoint(model=model, optimizer=optimizer, **values)
        self.manager = tf.train.CheckpointManager(self.checkpoint, self.directory, max_to_keep=1)

    def restore(self, model, optimizer, logger) -> bool:
        """Restore the latest resume checkpoint, if any; return whether one was found."""
        latest = self.manager.latest_checkpoint
        if latest is None:
            return False
        self.checkpoint.restore(latest).assert_existing_objects_matched()
        logger.info('resuming from %s at step %d', latest, int(self.values['step'].numpy()))
        return True

    def save(self, logger):
        path = self.manager.save(checkpoint_number=int(self.values['step'].numpy()))
        logger.info('saved the resume state to %s', path)


class Progress:
    """Log steps, loss, examples per second and the estimated time left every `every` steps."""

    def __init__(self, logger, total_steps, start_step, every):
        self.logger, self.total_steps, self.every = logger, total_steps, max(int(every), 1)
        self.start_step = start_step
        self.started = time.monotonic()
        self.examples = 0

    def update(self, step, batch_size, metrics: Dict[str, float], learning_rate, prefix=''):
        self.examples += batch_size
        if step % self.every and step != self.total_steps:
            return
        elapsed = time.monotonic() - self.started
        done = step - self.start_step
        rate = self.examples / elapsed if elapsed > 0 else 0.0
        remaining = elapsed / done * (self.total_steps - step) if done else 0.0
        shown = ' '.join('%s %.4f' % item for item in metrics.items())
        self.logger.info('%sstep %d/%d %s lr %.3g, %.1f examples/s, ETA %s', prefix, step,
                         self.total_steps, shown, learning_rate, rate,
                         time.strftime('%H:%M:%S', time.gmtime(remaining)))


class StopRequest:
    """Turn SIGINT and SIGTERM into a flag that the training loop checks after each step, so
    that it saves the resume state before exiting."""

    def __init__(self, logger):
        self.requested = False
        self.logger = logger
        self._previous = {}

    def __enter__(self):
        for signum in (signal.SIGINT, signal.SIGTERM):
            self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def _handle(self, signum, _frame):
        self.logger.warning('received %s, stopping after this step', signal.Signals(signum).name)
        self.requested = True

    def __exit__(self, *exc):
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)


class Interrupted(Exception):
    """Training stopped early (a signal or -stop_after) after saving the resume state."""


def export_model_dir(output_dir, spec: ModelSpec, weights: Dict[str, np.ndarray], step, logger,
                     keep_latest_only=True):
    """Write OUTPUT_DIR as a Google model directory: bert_config.json, vocab.txt,
    model.ckpt-STEP.* and the `checkpoint` state file that points at it.

    With `keep_latest_only`, the files of older model.ckpt-N exports are removed.
    """
    name = '%s-%d' % (CKPT_PREFIX, step)
    if keep_latest_only:
        pattern = re.compile(r'^%s-(\d+)\.(index|data-\d+-of-\d+)$' % re.escape(CKPT_PREFIX))
        for entry in os.listdir(output_dir) if os.path.isdir(output_dir) else []:
            match = pattern.match(entry)
            if match and int(match.group(1)) != step:
                os.remove(os.path.join(output_dir, entry))
    write_google_model_dir(weights, spec.config, spec.vocab_file, output_dir, ckpt_name=name)
    state_path = os.path.join(output_dir, STATE_FILE)
    temporary = state_path + '.tmp'
    with open(temporary, 'w', encoding='utf-8') as f:
        f.write('model_checkpoint_path: "%s"\nall_model_checkpoint_paths: "%s"\n' % (name, name))
    os.replace(temporary, state_path)
    logger.info('wrote the model to %s', os.path.join(output_dir, name))
    return os.path.join(output_dir, name)


def pad_to(rows, width, value=0):
    """Return an int32 array [len(rows), width] of the rows padded with `value`."""
    array = np.full((len(rows), width), value, dtype=np.int32)
    for index, row in enumerate(rows):
        array[index, :len(row)] = row
    return array
