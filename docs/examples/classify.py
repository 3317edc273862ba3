"""Classify text by topic with a logistic regression trained on frozen BERT vectors.

The script encodes docs/examples/data/topics_en.tsv with a running bert-serving server,
trains a softmax logistic regression in numpy on a fixed training split (every row except
each fifth one), and prints accuracy, macro-F1 and per-label F1 on the held-out fifth.
The encoder stays frozen: only the 384 x 4 weights of the classifier are trained.

Start a server, then run:

    bert-serving-start -port 5555 -port_out 5556
    python docs/examples/classify.py -port 5555 -port_out 5556

`-data` takes any UTF-8 TSV file with a header row and the columns `text` and `label`.
sentiment.py and tf_data_pipeline.py import the helpers below.
"""
import argparse
import csv
import os

import numpy as np

from bert_serving.client import BertClient

DATA_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'data')
TEST_EVERY = 5


def add_server_arguments(parser):
    """Add the -ip, -port, -port_out and -timeout flags that every example takes."""
    parser.add_argument('-ip', default='localhost', help='address of the bert-serving server')
    parser.add_argument('-port', type=int, default=5555, help='request port of the server')
    parser.add_argument('-port_out', type=int, default=5556, help='result port of the server')
    parser.add_argument('-timeout', type=int, default=60_000,
                        help='milliseconds to wait for each reply from the server')


def connect(args):
    """Return a BertClient for the server that the command-line flags name."""
    return BertClient(ip=args.ip, port=args.port, port_out=args.port_out, timeout=args.timeout)


def load_tsv(path):
    """Read a tab-separated file with a header row into a list of dicts."""
    with open(path, encoding='utf-8', newline='') as f:
        # QUOTE_NONE keeps quotation marks inside sentences as ordinary characters.
        return list(csv.DictReader(f, delimiter='\t', quoting=csv.QUOTE_NONE))


def split_rows(rows, test_every=TEST_EVERY):
    """Split rows into (train, test): every `test_every`-th row goes to the test split."""
    train = [row for i, row in enumerate(rows) if i % test_every != test_every - 1]
    test = [row for i, row in enumerate(rows) if i % test_every == test_every - 1]
    return train, test


def encode_labeled(bc, rows):
    """Encode the `text` column and map the `label` column to integer ids.

    Returns (vectors, label_ids, label_names), with label_names sorted so that the ids do
    not depend on the order of the rows.
    """
    label_names = sorted({row['label'] for row in rows})
    vectors = bc.encode([row['text'] for row in rows])
    label_ids = np.array([label_names.index(row['label']) for row in rows])
    return vectors, label_ids, label_names


class SoftmaxRegression:
    """Multinomial logistic regression with L2 regularization, fitted by gradient descent.

    Features are standardized with the training mean and standard deviation first, so the
    same learning rate works for normalized sentence-transformers vectors and for raw BERT
    layers, whose components differ in scale by orders of magnitude.
    """

    def __init__(self, l2=0.1, learning_rate=0.5, num_steps=500):
        self.l2 = l2
        self.learning_rate = learning_rate
        self.num_steps = num_steps

    def _standardize(self, x):
        return (x - self.mean) / self.std

    def fit(self, x, y):
        x = np.asarray(x, dtype=np.float64)
        num_classes = int(y.max()) + 1
        self.mean = x.mean(axis=0)
        self.std = x.std(axis=0) + 1e-8
        x = self._standardize(x)
        one_hot = np.eye(num_classes)[y]
        self.weights = np.zeros((x.shape[1], num_classes))
        self.bias = np.zeros(num_classes)
        for _ in range(self.num_steps):
            probabilities = self._softmax(x @ self.weights + self.bias)
            error = (probabilities - one_hot) / len(x)
            self.weights -= self.learning_rate * (x.T @ error + self.l2 * self.weights)
            self.bias -= self.learning_rate * error.sum(axis=0)
        return self

    def predict(self, x):
        x = self._standardize(np.asarray(x, dtype=np.float64))
        return np.argmax(x @ self.weights + self.bias, axis=1)

    @staticmethod
    def _softmax(logits):
        shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
        return shifted / shifted.sum(axis=1, keepdims=True)


def f1_per_label(y_true, y_pred, num_labels):
    """Return the F1 score of each label id; a label never predicted nor present scores 0."""
    scores = []
    for label in range(num_labels):
        true_positive = np.sum((y_pred == label) & (y_true == label))
        predicted = np.sum(y_pred == label)
        actual = np.sum(y_true == label)
        denominator = predicted + actual
        scores.append(2.0 * true_positive / denominator if denominator else 0.0)
    return np.array(scores)


def evaluate(bc, rows, title):
    """Encode `rows`, train on the training split, print the test metrics and return them.

    Returns a dict with the keys accuracy, macro_f1 and f1 (a dict of label -> F1).
    """
    train_rows, test_rows = split_rows(rows)
    x_train, y_train, label_names = encode_labeled(bc, train_rows)
    x_test = bc.encode([row['text'] for row in test_rows])
    y_test = np.array([label_names.index(row['label']) for row in test_rows])

    model = SoftmaxRegression().fit(x_train, y_train)
    y_pred = model.predict(x_test)

    accuracy = float(np.mean(y_pred == y_test))
    f1 = f1_per_label(y_test, y_pred, len(label_names))
    print('%s: %d training and %d test sentences, %d labels, %d-dim vectors'
          % (title, len(train_rows), len(test_rows), len(label_names), x_train.shape[1]))
    print('  accuracy: %.3f' % accuracy)
    print('  macro-F1: %.3f' % f1.mean())
    for name, score in zip(label_names, f1):
        print('  F1 %-12s %.3f' % (name, score))
    return {'accuracy': accuracy, 'macro_f1': float(f1.mean()),
            'f1': dict(zip(label_names, f1.tolist()))}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    add_server_arguments(parser)
    parser.add_argument('-data', default=os.path.join(DATA_DIR, 'topics_en.tsv'),
                        help='TSV file with a header row and the columns text and label')
    args = parser.parse_args()

    with connect(args) as bc:
        evaluate(bc, load_tsv(args.data), os.path.basename(args.data))


if __name__ == '__main__':
    main()
