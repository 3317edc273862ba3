"""Classify English and Chinese reviews as positive or negative from frozen BERT vectors.

For each language, the script encodes docs/examples/data/sentiment_<lang>.tsv with a
running bert-serving server, trains the numpy logistic regression of classify.py on every
row except each fifth one, and prints accuracy, macro-F1 and per-label F1 on the held-out
fifth. Chinese text goes to the server as it is, with no word segmentation, because the
BERT tokenizer splits CJK characters one per token.

Start a server, then run:

    bert-serving-start -port 5555 -port_out 5556
    python docs/examples/sentiment.py -port 5555 -port_out 5556
    python docs/examples/sentiment.py -port 5555 -port_out 5556 -lang zh

The default all-MiniLM-L6-v2 model was trained on English, so its Chinese vectors
separate the two labels less well. For Chinese text, start the server with a Chinese or
multilingual BERT model through -model_dir.
"""
import argparse
import os

from classify import DATA_DIR, add_server_arguments, connect, evaluate, load_tsv

LANGUAGES = ('en', 'zh')


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    add_server_arguments(parser)
    parser.add_argument('-lang', nargs='+', choices=LANGUAGES, default=list(LANGUAGES),
                        help='languages to evaluate, each on its own data set')
    args = parser.parse_args()

    with connect(args) as bc:
        for lang in args.lang:
            path = os.path.join(DATA_DIR, 'sentiment_%s.tsv' % lang)
            evaluate(bc, load_tsv(path), '[%s] %s' % (lang, os.path.basename(path)))


if __name__ == '__main__':
    main()
