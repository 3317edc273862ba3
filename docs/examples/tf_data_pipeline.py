"""Train a small Keras classifier on BertClient vectors streamed through tf.data.

The script builds a `tf.data.Dataset` with `from_generator`: the generator reads
sentences from docs/examples/data/sentiment_<lang>.tsv in batches and encodes each batch
with BertClient while the pipeline pulls it. `cache()` keeps the vectors after the first
epoch, so the server encodes each sentence once however many epochs run. A two-layer
Keras model trains on every row except each fifth one and the script prints its accuracy
on the held-out fifth.

Start a server, then run:

    bert-serving-start -port 5555 -port_out 5556
    python docs/examples/tf_data_pipeline.py -port 5555 -port_out 5556

The script needs TensorFlow, which `pip install ".[server]"` installs; the client alone
does not. It seeds TensorFlow, so repeated runs on one machine print the same accuracy.
"""
import argparse
import os

import numpy as np
import tensorflow as tf

from classify import DATA_DIR, add_server_arguments, connect, load_tsv, split_rows


def make_dataset(bc, rows, label_names, batch_size, dim):
    """Return a Dataset of (vectors [batch, dim], labels [batch]) encoded batch by batch."""

    def encoded_batches():
        for start in range(0, len(rows), batch_size):
            batch = rows[start:start + batch_size]
            vectors = bc.encode([row['text'] for row in batch])
            labels = np.array([label_names.index(row['label']) for row in batch], np.int32)
            yield vectors, labels

    dataset = tf.data.Dataset.from_generator(
        encoded_batches,
        output_signature=(tf.TensorSpec([None, dim], tf.float32),
                          tf.TensorSpec([None], tf.int32)))
    # A generator has no known length, so state it and Keras can size each epoch up front.
    num_batches = -(-len(rows) // batch_size)
    return dataset.apply(tf.data.experimental.assert_cardinality(num_batches))


def build_model(dim, num_labels):
    model = tf.keras.Sequential([
        tf.keras.Input(shape=(dim,)),
        tf.keras.layers.Dense(64, activation='relu'),
        tf.keras.layers.Dropout(0.2),
        tf.keras.layers.Dense(num_labels),
    ])
    model.compile(optimizer=tf.keras.optimizers.Adam(1e-3),
                  loss=tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=['accuracy'])
    return model


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    add_server_arguments(parser)
    parser.add_argument('-lang', choices=('en', 'zh'), default='en',
                        help='which sentiment data set to train on')
    parser.add_argument('-batch_size', type=int, default=32,
                        help='sentences per encode request and per training step')
    parser.add_argument('-epochs', type=int, default=30, help='training epochs')
    args = parser.parse_args()
    if args.batch_size < 1:
        parser.error('-batch_size must be at least 1, but got %d' % args.batch_size)
    if args.epochs < 1:
        parser.error('-epochs must be at least 1, but got %d' % args.epochs)

    tf.keras.utils.set_random_seed(0)
    rows = load_tsv(os.path.join(DATA_DIR, 'sentiment_%s.tsv' % args.lang))
    train_rows, test_rows = split_rows(rows)
    label_names = sorted({row['label'] for row in rows})

    with connect(args) as bc:
        # The vector size depends on the model and the pooling flags of the server.
        dim = bc.encode([train_rows[0]['text']]).shape[1]
        # The generator yields whole batches already, so the pipeline does not batch again.
        # Shuffling after cache() reorders the cached batches in every epoch, so Keras
        # gets shuffle=False.
        train = (make_dataset(bc, train_rows, label_names, args.batch_size, dim)
                 .cache()
                 .shuffle(len(train_rows) // args.batch_size + 1, seed=0)
                 .prefetch(tf.data.AUTOTUNE))
        test = make_dataset(bc, test_rows, label_names, args.batch_size, dim).cache()

        model = build_model(dim, len(label_names))
        history = model.fit(train, epochs=args.epochs, shuffle=False, verbose=0)
        _, test_accuracy = model.evaluate(test, verbose=0)

    print('sentiment_%s.tsv: %d training and %d test sentences, %d-dim vectors, %d epochs'
          % (args.lang, len(train_rows), len(test_rows), dim, args.epochs))
    print('  final training accuracy: %.3f' % history.history['accuracy'][-1])
    print('  test accuracy: %.3f' % test_accuracy)


if __name__ == '__main__':
    main()
