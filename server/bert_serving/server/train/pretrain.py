"""Continued pre-training with the masked-LM objective, and with -nsp next-sentence
prediction (bert-serving-train pretrain).

Instances are built once from the corpus as Google's create_pretraining_data.py builds them.
The sentences of one document are packed up to -max_seq_len. With -nsp each instance is a
pair whose second part is the true continuation or, half of the time, text from another
document. Masking is drawn anew for every batch: 15% of the WordPiece tokens (not [CLS] or
[SEP]) are chosen, and of those 80% become [MASK], 10% a random token and 10% stay.
Batches and masks come from random generators seeded by (seed, step), so a resumed run
continues exactly where the interrupted one stopped.
"""
import json
import os
from dataclasses import dataclass
from typing import List

import numpy as np
import tensorflow as tf

from .data import DataError, read_corpus
from .loop import (Interrupted, Progress, ResumeState, StopRequest, build_optimizer,
                   export_model_dir, load_start_model, make_optimizer, pad_to)
from .model import (MLM_VARIABLES, NSP_VARIABLES, build_model, mlm_head_weights,
                    nsp_head_weights, read_head_weights)
from ..tokenization import truncate_pair

RESULTS_FILE = 'pretrain_results.json'


@dataclass
class Instance:
    input_ids: List[int]
    segment_ids: List[int]
    is_random_next: int  # 1 when the second segment comes from another document


def build_instances(documents: List[List[List[int]]], tokenizer, max_seq_len, nsp,
                    rng: np.random.Generator) -> List[Instance]:
    """Pack the tokenized sentences of each document into training instances."""
    instances = []
    target = max_seq_len - 3 if nsp else max_seq_len - 2
    for doc_index, document in enumerate(documents):
        chunk, chunk_length, i = [], 0, 0
        while i < len(document):
            chunk.append(document[i])
            chunk_length += len(document[i])
            if i == len(document) - 1 or chunk_length >= target:
                if nsp:
                    instance, unused = _pair_instance(documents, doc_index, chunk, target,
                                                      tokenizer, rng)
                    instances.append(instance)
                    i -= unused  # read the sentences that the random pair left out again
                else:
                    ids = [t for sentence in chunk for t in sentence][:target]
                    ids = [tokenizer.cls_id] + ids + [tokenizer.sep_id]
                    instances.append(Instance(ids, [0] * len(ids), 0))
                chunk, chunk_length = [], 0
            i += 1
    return instances


def _pair_instance(documents, doc_index, chunk, target, tokenizer, rng):
    """Return (instance, unused): the pair (A, B) from `chunk`, where B is random text from
    another document when the chunk has one sentence or with probability 1/2, and the
    number of the chunk's sentences that B left out."""
    split = int(rng.integers(1, len(chunk))) if len(chunk) >= 2 else 1
    first = [t for sentence in chunk[:split] for t in sentence]
    unused = 0
    if len(chunk) == 1 or rng.random() < 0.5:
        is_random = 1
        other = int(rng.integers(0, len(documents) - 1))
        other += other >= doc_index  # any document but this one
        start = int(rng.integers(0, len(documents[other])))
        second = []
        for sentence in documents[other][start:]:
            second.extend(sentence)
            if len(second) >= target - len(first):
                break
        unused = len(chunk) - split
    else:
        is_random = 0
        second = [t for sentence in chunk[split:] for t in sentence]
    first, second = list(first), list(second)
    # Cut the longer part, as truncate_seq_pair does; Google also cuts from the front at
    # random, which this keeps simple by always cutting from the back.
    truncate_pair(first, second, target)
    ids = [tokenizer.cls_id] + first + [tokenizer.sep_id] + second + [tokenizer.sep_id]
    segments = [0] * (len(first) + 2) + [1] * (len(second) + 1)
    return Instance(ids, segments, is_random), unused


def mask_batch(instances: List[Instance], tokenizer, vocab_size, mask_prob, max_predictions,
               rng: np.random.Generator):
    """Choose and replace the masked tokens of a batch.

    Returns:
        (input_ids, segment_ids, lengths, positions, label_ids, label_weights,
        next_sentence_labels) as numpy arrays; `positions`, `label_ids` and
        `label_weights` are [batch, max_predictions], padded with weight 0.
    """
    mask_id = tokenizer.vocab['[MASK]']
    special = {tokenizer.cls_id, tokenizer.sep_id}
    rows, positions, labels, weights = [], [], [], []
    for instance in instances:
        ids = list(instance.input_ids)
        candidates = [i for i, token in enumerate(ids) if token not in special]
        count = min(max_predictions, max(1, int(round(len(candidates) * mask_prob))))
        chosen = sorted(rng.choice(candidates, size=min(count, len(candidates)), replace=False))
        row_labels = []
        for position in chosen:
            row_labels.append(ids[position])
            draw = rng.random()
            if draw < 0.8:
                ids[position] = mask_id
            elif draw >= 0.9:
                ids[position] = int(rng.integers(0, vocab_size))
        rows.append(ids)
        positions.append(list(chosen))
        labels.append(row_labels)
        weights.append([1] * len(chosen))
    lengths = np.array([len(ids) for ids in rows], dtype=np.int32)
    width = int(lengths.max())
    return (pad_to(rows, width), pad_to([i.segment_ids for i in instances], width), lengths,
            pad_to(positions, max_predictions), pad_to(labels, max_predictions),
            pad_to(weights, max_predictions).astype(np.float32),
            np.array([i.is_random_next for i in instances], dtype=np.int32))


class Pretrainer:
    """One pre-training run: corpus, model with heads, optimizer, resume state and the loop."""

    def __init__(self, args, logger):
        self.args, self.logger = args, logger
        documents = read_corpus(args.corpus_file)
        if args.nsp and len(documents) < 2:
            raise DataError(args.corpus_file, 0, '-nsp needs at least two documents separated '
                            'by a blank line, but the corpus has one')
        self.spec, base_weights, self.tokenizer = load_start_model(args, logger)
        if '[MASK]' not in self.tokenizer.vocab:
            raise ValueError('vocabulary %s has no [MASK] token, which the masked-LM objective '
                             'needs' % self.spec.vocab_file)
        tokenized = [[[self.tokenizer.vocab[t] for t in self.tokenizer.tokenize(sentence)]
                      for sentence in document] for document in documents]
        tokenized = [[s for s in document if s] for document in tokenized]
        tokenized = [document for document in tokenized if document]
        if not tokenized:
            raise DataError(args.corpus_file, 0, 'no sentence of the corpus has any token')
        self.instances = build_instances(tokenized, self.tokenizer, args.max_seq_len, args.nsp,
                                         np.random.default_rng(args.seed))
        logger.info('%d documents, %d sentences, %d training instances of up to %d tokens',
                    len(documents), sum(len(d) for d in documents), len(self.instances),
                    args.max_seq_len)
        self.max_predictions = args.max_predictions_per_seq or max(
            1, int(round(args.max_seq_len * args.mask_prob)))

        heads = self._head_weights()
        self.model = build_model(self.spec.config, base_weights, heads, args.dropout, args.seed,
                                 logger)
        self.optimizer = make_optimizer(args, args.steps)
        build_optimizer(self.optimizer, self.model)
        self.resume = ResumeState(args.output_dir, self.model, self.optimizer,
                                  step=tf.Variable(0, dtype=tf.int64))
        self._train_step = self._make_train_step()
        self._orders = {}

    def _head_weights(self):
        """Return the heads from the start checkpoint when it has them, else new ones."""
        config, rng = self.spec.config, np.random.default_rng(self.args.seed)
        source = self.spec.tuned_checkpoint or (self.spec.weights_path
                                                if self.spec.layout == 'google' else None)
        # NOTE: heads stored in a Hugging Face model.safetensors (cls.predictions.*) are not
        # read, so pre-training a Hugging Face model starts with a new masked-LM head.
        heads = read_head_weights(source, MLM_VARIABLES)
        if heads:
            self.logger.info('masked-LM head read from %s', source)
        else:
            heads = mlm_head_weights(config, rng)
            self.logger.info('the start model has no masked-LM head, so a new one is initialized')
        if self.args.nsp:
            nsp = read_head_weights(source, NSP_VARIABLES)
            if nsp:
                self.logger.info('next-sentence head read from %s', source)
            else:
                nsp = nsp_head_weights(config, rng)
                self.logger.info('the start model has no next-sentence head, so a new one is '
                                 'initialized')
            heads.update(nsp)
        return heads

    def _make_train_step(self):
        model, optimizer, nsp = self.model, self.optimizer, self.args.nsp
        signature = [tf.TensorSpec([None, None], tf.int32)] * 2 + [
            tf.TensorSpec([None], tf.int32)] + [tf.TensorSpec([None, None], tf.int32)] * 2 + [
            tf.TensorSpec([None, None], tf.float32), tf.TensorSpec([None], tf.int32),
            tf.TensorSpec([], tf.int64)]

        @tf.function(input_signature=signature, autograph=False)
        def train_step(input_ids, segment_ids, lengths, positions, label_ids, label_weights,
                       next_labels, step):
            with tf.GradientTape() as tape:
                sequence_output, pooled = model.encode(input_ids, segment_ids, lengths, step,
                                                       training=True)
                logits = model.masked_lm_logits(sequence_output, positions)
                per_token = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=label_ids,
                                                                           logits=logits)
                total_weight = tf.reduce_sum(label_weights)
                mlm_loss = tf.reduce_sum(per_token * label_weights) / (total_weight + 1e-5)
                correct = tf.cast(tf.equal(tf.argmax(logits, -1, output_type=tf.int32),
                                           label_ids), tf.float32)
                mlm_accuracy = tf.reduce_sum(correct * label_weights) / (total_weight + 1e-5)
                loss = mlm_loss
                nsp_loss = tf.constant(0.0)
                if nsp:
                    nsp_loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(
                        labels=next_labels, logits=model.next_sentence_logits(pooled)))
                    loss += nsp_loss
            variables = model.trainable_variables
            gradients = tape.gradient(loss, variables)
            # Without -nsp the pooler takes no part in the loss and gets no gradient.
            optimizer.apply_gradients([(gradient, variable) for gradient, variable
                                       in zip(gradients, variables) if gradient is not None])
            return loss, mlm_loss, mlm_accuracy, nsp_loss

        return train_step

    def _batch_instances(self, step):
        """Return the instances of batch `step`: consecutive slices of a per-pass shuffle."""
        size, count = self.args.batch_size, len(self.instances)
        chosen = []
        for index in range(step * size, (step + 1) * size):
            epoch = index // count
            if epoch not in self._orders:
                self._orders = {epoch: np.random.default_rng([self.args.seed, epoch]).permutation(
                    count)}
            chosen.append(self.instances[self._orders[epoch][index % count]])
        return chosen

    def run(self):
        args, logger = self.args, self.logger
        step_variable = self.resume.values['step']
        os.makedirs(args.output_dir, exist_ok=True)
        self.resume.restore(self.model, self.optimizer, logger)
        results_path = os.path.join(args.output_dir, RESULTS_FILE)
        results = {'losses': []}
        if os.path.isfile(results_path) and int(step_variable.numpy()):
            with open(results_path, encoding='utf-8') as f:
                results = json.load(f)
        start = int(step_variable.numpy())
        if start >= args.steps:
            logger.info('this run already finished at step %d; delete %s to train again',
                        start, args.output_dir)
            return results

        progress = Progress(logger, args.steps, start, args.log_every)
        steps_this_run = 0
        with StopRequest(logger) as stop:
            for step in range(start, args.steps):
                batch = mask_batch(self._batch_instances(step), self.tokenizer,
                                   self.spec.config.vocab_size, args.mask_prob,
                                   self.max_predictions, np.random.default_rng([args.seed, step]))
                loss, mlm_loss, mlm_accuracy, nsp_loss = (
                    float(value) for value in self._train_step(*batch, tf.constant(step, tf.int64)))
                if not np.isfinite(loss):
                    raise FloatingPointError('the loss is %s at step %d; lower -learning_rate'
                                             % (loss, step + 1))
                step_variable.assign(step + 1)
                steps_this_run += 1
                metrics = {'loss': loss, 'mlm_loss': mlm_loss, 'mlm_accuracy': mlm_accuracy}
                if args.nsp:
                    metrics['nsp_loss'] = nsp_loss
                results['losses'].append({'step': step + 1, **metrics})
                progress.update(step + 1, args.batch_size, metrics,
                                float(self.optimizer.learning_rate.numpy()))
                final = step + 1 == args.steps
                if final or (args.save_steps and (step + 1) % args.save_steps == 0) or (
                        stop.requested or steps_this_run == args.stop_after):
                    self._write_results(results_path, results)
                    self.resume.save(logger)
                if not final and (stop.requested or steps_this_run == args.stop_after):
                    raise Interrupted('stopped at step %d; run the same command again to resume'
                                      % (step + 1))

        export_model_dir(args.output_dir, self.spec, self.model.named_weights(), args.steps,
                         logger)
        first, last = results['losses'][0], results['losses'][-1]
        logger.info('done: loss %.4f at step %d, %.4f at step %d', first['loss'], first['step'],
                    last['loss'], last['step'])
        return results

    @staticmethod
    def _write_results(path, results):
        temporary = path + '.tmp'
        with open(temporary, 'w', encoding='utf-8') as f:
            json.dump(results, f, indent=1)
        os.replace(temporary, path)


def pretrain(args, logger):
    """Run `bert-serving-train pretrain`; return the per-step losses."""
    return Pretrainer(args, logger).run()
