"""Fine-tuning for sequence and sentence-pair classification (bert-serving-train finetune).

A classifier on BERT's pooled output (variables `output_weights` [num_labels, hidden] and
`output_bias`, as Google's run_classifier.py names them) is trained with the encoder by
AdamW with warm-up and linear decay. After each epoch the model is evaluated on the
held-out split (accuracy and macro-F1). The best epoch so far is exported as
OUTPUT_DIR/model.ckpt-N, and training stops early after -patience epochs without a better
macro-F1.
"""
import json
import math
import os
from typing import Dict, List, Sequence

import numpy as np
import tensorflow as tf

from .data import DataError, Example, check_labels, check_pairs, read_labeled_file
from .loop import (Interrupted, Progress, ResumeState, StopRequest, build_optimizer,
                   export_model_dir, load_start_model, make_optimizer, pad_to)
from .model import build_model, classifier_weights
from ..tokenization import truncate_pair

LABELS_FILE = 'labels.txt'
RESULTS_FILE = 'eval_results.json'


def encode_examples(tokenizer, examples: Sequence[Example], max_seq_len):
    """Return (input_ids, segment_ids) lists: [CLS] A [SEP] or [CLS] A [SEP] B [SEP],
    truncated to max_seq_len as the server truncates."""
    input_ids, segment_ids = [], []
    for example in examples:
        first = [tokenizer.vocab[t] for t in tokenizer.tokenize(example.text)]
        if example.text_b is None:
            ids = [tokenizer.cls_id] + first[:max_seq_len - 2] + [tokenizer.sep_id]
            segments = [0] * len(ids)
        else:
            second = [tokenizer.vocab[t] for t in tokenizer.tokenize(example.text_b)]
            truncate_pair(first, second, max_seq_len - 3)
            ids = ([tokenizer.cls_id] + first + [tokenizer.sep_id] + second + [tokenizer.sep_id])
            segments = [0] * (len(first) + 2) + [1] * (len(second) + 1)
        input_ids.append(ids)
        segment_ids.append(segments)
    return input_ids, segment_ids


def classification_metrics(labels: np.ndarray, predictions: np.ndarray) -> Dict[str, float]:
    """Return accuracy and macro-F1, the F1 averaged over every class that occurs in
    `labels` or `predictions` (as scikit-learn's f1_score(average='macro') does)."""
    accuracy = float(np.mean(labels == predictions)) if len(labels) else 0.0
    scores = []
    for label in np.union1d(labels, predictions):
        true_positive = np.sum((predictions == label) & (labels == label))
        predicted = np.sum(predictions == label)
        actual = np.sum(labels == label)
        precision = true_positive / predicted if predicted else 0.0
        recall = true_positive / actual if actual else 0.0
        scores.append(2 * precision * recall / (precision + recall) if precision + recall else 0.0)
    return {'accuracy': accuracy, 'macro_f1': float(np.mean(scores)) if scores else 0.0}


def logistic_regression(train_x, train_y, num_labels, l2=1e-3, steps=2000, learning_rate=0.05):
    """Fit a multinomial logistic regression with L2 penalty by full-batch Adam; return (W, b)."""
    rng = np.random.default_rng(0)
    weights = rng.normal(0, 0.01, (train_x.shape[1], num_labels))
    bias = np.zeros(num_labels)
    moments = [np.zeros_like(weights), np.zeros_like(bias)]
    squares = [np.zeros_like(weights), np.zeros_like(bias)]
    onehot = np.eye(num_labels)[train_y]
    for step in range(1, steps + 1):
        logits = train_x @ weights + bias
        logits -= logits.max(1, keepdims=True)
        probs = np.exp(logits)
        probs /= probs.sum(1, keepdims=True)
        error = (probs - onehot) / len(train_x)
        gradients = [train_x.T @ error + l2 * weights, error.sum(0)]
        for index, (parameter, gradient) in enumerate(zip((weights, bias), gradients)):
            moments[index] = 0.9 * moments[index] + 0.1 * gradient
            squares[index] = 0.999 * squares[index] + 0.001 * gradient ** 2
            corrected = moments[index] / (1 - 0.9 ** step)
            scale = np.sqrt(squares[index] / (1 - 0.999 ** step)) + 1e-8
            parameter -= learning_rate * corrected / scale
    return weights, bias


class Finetuner:
    """One fine-tuning run: data, model, optimizer, resume state and the loop over epochs."""

    def __init__(self, args, logger):
        self.args, self.logger = args, logger
        self._read_data()
        self.spec, base_weights, self.tokenizer = load_start_model(args, logger)
        self.train_ids, self.train_segments = encode_examples(
            self.tokenizer, self.train_examples, args.max_seq_len)
        self.eval_ids, self.eval_segments = encode_examples(
            self.tokenizer, self.eval_examples, args.max_seq_len)
        self.train_labels = np.array([self.label_index[e.label] for e in self.train_examples])
        self.eval_labels = np.array([self.label_index[e.label] for e in self.eval_examples])

        heads = classifier_weights(self.spec.config, len(self.labels),
                                   np.random.default_rng(args.seed))
        self.base_weights = base_weights
        self.model = build_model(self.spec.config, base_weights, heads, args.dropout, args.seed,
                                 logger)
        self.steps_per_epoch = math.ceil(len(self.train_examples) / args.batch_size)
        self.total_steps = self.steps_per_epoch * args.epochs
        self.optimizer = make_optimizer(args, self.total_steps)
        build_optimizer(self.optimizer, self.model)
        self.resume = ResumeState(
            args.output_dir, self.model, self.optimizer,
            step=tf.Variable(0, dtype=tf.int64), epochs_done=tf.Variable(0, dtype=tf.int64),
            best_macro_f1=tf.Variable(-1.0, dtype=tf.float32),
            epochs_without_improvement=tf.Variable(0, dtype=tf.int64),
            finished=tf.Variable(0, dtype=tf.int64))
        self._train_step = self._make_train_step()
        self._predict = self._make_predict()

    def _read_data(self):
        args = self.args
        examples = read_labeled_file(args.train_file, args.text_column, args.text_b_column,
                                     args.label_column)
        self.labels = sorted({e.label for e in examples})
        if len(self.labels) < 2:
            raise DataError(args.train_file, 0, 'all examples have the label "%s"; a classifier '
                            'needs at least two labels' % self.labels[0])
        self.label_index = {label: index for index, label in enumerate(self.labels)}
        has_pairs = examples[0].text_b is not None
        if args.eval_file:
            self.train_examples = examples
            self.eval_examples = read_labeled_file(args.eval_file, args.text_column,
                                                   args.text_b_column, args.label_column)
            check_labels(self.eval_examples, self.labels, args.eval_file, args.train_file)
            check_pairs(self.eval_examples, args.eval_file, has_pairs)
        else:
            if len(examples) < 2:
                raise DataError(args.train_file, 0, 'one example cannot be split into a '
                                'training and an evaluation part; add examples or pass -eval_file')
            order = np.random.default_rng(args.seed).permutation(len(examples))
            eval_count = min(len(examples) - 1, max(1, round(len(examples) * args.eval_fraction)))
            self.eval_examples = [examples[i] for i in sorted(order[:eval_count])]
            self.train_examples = [examples[i] for i in sorted(order[eval_count:])]
        self.logger.info('%d training and %d evaluation examples%s, labels: %s',
                         len(self.train_examples), len(self.eval_examples),
                         ' (sentence pairs)' if has_pairs else '', ', '.join(self.labels))

    def _make_train_step(self):
        model, optimizer = self.model, self.optimizer
        signature = [tf.TensorSpec([None, None], tf.int32), tf.TensorSpec([None, None], tf.int32),
                     tf.TensorSpec([None], tf.int32), tf.TensorSpec([None], tf.int32),
                     tf.TensorSpec([], tf.int64)]

        @tf.function(input_signature=signature, autograph=False)
        def train_step(input_ids, segment_ids, lengths, labels, step):
            with tf.GradientTape() as tape:
                _, pooled = model.encode(input_ids, segment_ids, lengths, step, training=True)
                logits = model.classifier_logits(pooled, step, training=True)
                loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(
                    labels=labels, logits=logits))
            variables = model.trainable_variables
            optimizer.apply_gradients(zip(tape.gradient(loss, variables), variables))
            return loss

        return train_step

    def _make_predict(self):
        model = self.model
        signature = [tf.TensorSpec([None, None], tf.int32), tf.TensorSpec([None, None], tf.int32),
                     tf.TensorSpec([None], tf.int32)]

        @tf.function(input_signature=signature, autograph=False)
        def predict(input_ids, segment_ids, lengths):
            sequence_output, pooled = model.encode(input_ids, segment_ids, lengths)
            mask = tf.sequence_mask(lengths, tf.shape(input_ids)[1], dtype=tf.float32)
            mean = (tf.reduce_sum(sequence_output * mask[:, :, tf.newaxis], 1)
                    / tf.reduce_sum(mask, 1, keepdims=True))
            return model.classifier_logits(pooled), mean

        return predict

    def _batch(self, ids: List[List[int]], segments: List[List[int]]):
        lengths = np.array([len(row) for row in ids], dtype=np.int32)
        width = int(lengths.max())
        return pad_to(ids, width), pad_to(segments, width), lengths

    def run_model(self, ids, segments):
        """Return (logits, mean-pooled last layer) for all rows, in batches."""
        logits, vectors = [], []
        for start in range(0, len(ids), self.args.batch_size):
            batch = self._batch(ids[start:start + self.args.batch_size],
                                segments[start:start + self.args.batch_size])
            batch_logits, batch_vectors = self._predict(*batch)
            logits.append(batch_logits.numpy())
            vectors.append(batch_vectors.numpy())
        return np.concatenate(logits), np.concatenate(vectors)

    def evaluate(self) -> Dict[str, float]:
        logits, _ = self.run_model(self.eval_ids, self.eval_segments)
        shifted = logits - logits.max(1, keepdims=True)
        log_probs = shifted - np.log(np.exp(shifted).sum(1, keepdims=True))
        metrics = classification_metrics(self.eval_labels, logits.argmax(1))
        metrics['loss'] = float(-log_probs[np.arange(len(logits)), self.eval_labels].mean())
        return metrics

    def frozen_baseline(self) -> Dict[str, float]:
        """Score logistic regression on the start model's frozen sentence vectors (mean over
        the last layer, L2-normalized) on the same training and evaluation split."""
        _, train_vectors = self.run_model(self.train_ids, self.train_segments)
        _, eval_vectors = self.run_model(self.eval_ids, self.eval_segments)
        train_vectors /= np.linalg.norm(train_vectors, axis=1, keepdims=True)
        eval_vectors /= np.linalg.norm(eval_vectors, axis=1, keepdims=True)
        weights, bias = logistic_regression(train_vectors.astype(np.float64), self.train_labels,
                                            len(self.labels))
        return classification_metrics(self.eval_labels, (eval_vectors @ weights + bias).argmax(1))

    def _results_path(self):
        return os.path.join(self.args.output_dir, RESULTS_FILE)

    def _load_results(self):
        if os.path.isfile(self._results_path()):
            with open(self._results_path(), encoding='utf-8') as f:
                return json.load(f)
        return {'epochs': []}

    def _write_results(self, results):
        temporary = self._results_path() + '.tmp'
        with open(temporary, 'w', encoding='utf-8') as f:
            json.dump(results, f, indent=2)
        os.replace(temporary, self._results_path())

    def run(self):
        args, logger, state = self.args, self.logger, self.resume.values
        os.makedirs(args.output_dir, exist_ok=True)
        with open(os.path.join(args.output_dir, LABELS_FILE), 'w', encoding='utf-8') as f:
            f.write(''.join(label + '\n' for label in self.labels))

        resumed = self.resume.restore(self.model, self.optimizer, logger)
        results = self._load_results() if resumed else {'epochs': []}
        if int(state['finished'].numpy()):
            logger.info('this run already finished; delete %s to train again', args.output_dir)
            return results
        if args.baseline and 'baseline' not in results:
            results['baseline'] = self.frozen_baseline()
            logger.info('baseline, logistic regression on frozen vectors: accuracy %.4f, '
                        'macro-F1 %.4f', results['baseline']['accuracy'],
                        results['baseline']['macro_f1'])
            self._write_results(results)

        logger.info('training %d epochs of %d steps, batch size %d', args.epochs,
                    self.steps_per_epoch, args.batch_size)
        progress = Progress(logger, self.total_steps, int(state['step'].numpy()), args.log_every)
        steps_this_run = 0
        with StopRequest(logger) as stop:
            for epoch in range(int(state['epochs_done'].numpy()), args.epochs):
                order = np.random.default_rng([args.seed, epoch]).permutation(
                    len(self.train_examples))
                for index in range(self.steps_per_epoch):
                    step = epoch * self.steps_per_epoch + index
                    if step < int(state['step'].numpy()):
                        continue  # done before the interruption
                    rows = order[index * args.batch_size:(index + 1) * args.batch_size]
                    batch = self._batch([self.train_ids[i] for i in rows],
                                        [self.train_segments[i] for i in rows])
                    loss = self._train_step(*batch, self.train_labels[rows].astype(np.int32),
                                            tf.constant(step, tf.int64))
                    state['step'].assign(step + 1)
                    steps_this_run += 1
                    learning_rate = float(self.optimizer.learning_rate.numpy())
                    progress.update(step + 1, len(rows), {'loss': float(loss)}, learning_rate,
                                    'epoch %d/%d ' % (epoch + 1, args.epochs))
                    if args.save_steps and (step + 1) % args.save_steps == 0:
                        self.resume.save(logger)
                    if stop.requested or steps_this_run == args.stop_after:
                        self.resume.save(logger)
                        raise Interrupted('stopped at step %d; run the same command again to '
                                          'resume' % (step + 1))

                if self._end_epoch(epoch, results):
                    break
        state['finished'].assign(1)
        self.resume.save(logger)  # records `finished`, so a rerun does not train again
        best = max(results['epochs'], key=lambda e: e['macro_f1'])
        logger.info('done: best epoch %d with accuracy %.4f, macro-F1 %.4f, saved as %s',
                    best['epoch'], best['accuracy'], best['macro_f1'], best['checkpoint'])
        return results

    def _end_epoch(self, epoch, results) -> bool:
        """Evaluate, export on improvement and save the resume state; return True to stop."""
        args, logger, state = self.args, self.logger, self.resume.values
        step = int(state['step'].numpy())
        metrics = self.evaluate()
        metrics.update(epoch=epoch + 1, step=step)
        logger.info('epoch %d/%d evaluation: accuracy %.4f, macro-F1 %.4f, loss %.4f', epoch + 1,
                    args.epochs, metrics['accuracy'], metrics['macro_f1'], metrics['loss'])
        if metrics['macro_f1'] > float(state['best_macro_f1'].numpy()):
            path = export_model_dir(args.output_dir, self.spec, self.model.named_weights(), step,
                                    logger)
            metrics['checkpoint'] = os.path.basename(path)
            state['best_macro_f1'].assign(metrics['macro_f1'])
            state['epochs_without_improvement'].assign(0)
        else:
            metrics['checkpoint'] = None
            state['epochs_without_improvement'].assign_add(1)
        results['epochs'] = [e for e in results['epochs'] if e['epoch'] <= epoch] + [metrics]
        for earlier in results['epochs']:
            if earlier['checkpoint'] and earlier is not metrics and metrics['checkpoint']:
                earlier['checkpoint'] = None  # its files were replaced by the new best
        self._write_results(results)
        state['epochs_done'].assign(epoch + 1)
        self.resume.save(logger)
        if epoch + 1 < args.epochs and (
                int(state['epochs_without_improvement'].numpy()) >= args.patience):
            logger.info('early stop: no better macro-F1 for %d epoch(s)', args.patience)
            return True
        return False


def finetune(args, logger):
    """Run `bert-serving-train finetune`; return the evaluation results."""
    return Finetuner(args, logger).run()
