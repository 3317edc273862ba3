"""Answer questions from an FAQ by semantic search over BERT sentence vectors.

The script encodes every question of an FAQ file once, then for each new question
encodes it, ranks the FAQ questions by cosine similarity and prints the answers of the
top k. With `-match question_answer` it encodes each question together with its answer,
which gives the model more words to match a paraphrase against. The script reads one
question per line from standard input until end of file, or answers the single question
given with -query and exits.

Start a server, then run:

    bert-serving-start -port 5555 -port_out 5556
    python docs/examples/faq_search.py -port 5555 -port_out 5556
    python docs/examples/faq_search.py -port 5555 -port_out 5556 -query "my package came broken"

The default FAQ is docs/examples/data/faq_en.tsv. For docs/examples/data/faq_zh.tsv
(`-data`), start the server with a Chinese or multilingual BERT model, because the
vocabulary of the default all-MiniLM-L6-v2 model has no entry for most Chinese
characters and maps them to [UNK].

Cosine similarity ranks well with sentence-transformers models such as the default one,
which were trained for it. With the raw layers of an original BERT model, the ranking is
weaker and unrelated sentences can still score above 0.8 (see docs/pooling.md).
"""
import argparse
import os
import sys

import numpy as np

from classify import DATA_DIR, add_server_arguments, connect, load_tsv


def normalize_rows(vectors):
    """Scale each row to unit L2 norm, so that a dot product is a cosine similarity."""
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors / np.maximum(norms, 1e-12)


class FaqIndex:
    """The FAQ's questions as unit vectors, searchable by cosine similarity."""

    def __init__(self, bc, pairs, match='question'):
        self.bc = bc
        self.questions = [pair['question'] for pair in pairs]
        self.answers = [pair['answer'] for pair in pairs]
        if match == 'question':
            texts = self.questions
        else:
            texts = ['%s %s' % (q, a) for q, a in zip(self.questions, self.answers)]
        self.vectors = normalize_rows(bc.encode(texts))

    def search(self, query, top_k):
        """Return the top_k (score, question, answer) triples for `query`, best first."""
        query_vector = normalize_rows(self.bc.encode([query]))[0]
        scores = self.vectors @ query_vector
        best = np.argsort(-scores)[:top_k]
        return [(float(scores[i]), self.questions[i], self.answers[i]) for i in best]


def print_results(query, results):
    print('Q: %s' % query)
    for rank, (score, question, answer) in enumerate(results, start=1):
        print('  %d. [%.3f] %s' % (rank, score, question))
        print('     %s' % answer)
    sys.stdout.flush()


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    add_server_arguments(parser)
    parser.add_argument('-data', default=os.path.join(DATA_DIR, 'faq_en.tsv'),
                        help='TSV file with a header row and the columns question and answer')
    parser.add_argument('-match', choices=('question', 'question_answer'), default='question',
                        help='what each FAQ entry is matched by: its question, or its question '
                             'and answer encoded together')
    parser.add_argument('-top_k', type=int, default=3, help='number of answers to print')
    parser.add_argument('-query', help='answer this one question and exit, without reading '
                                       'standard input')
    args = parser.parse_args()
    if args.top_k < 1:
        parser.error('-top_k must be at least 1, but got %d' % args.top_k)

    with connect(args) as bc:
        index = FaqIndex(bc, load_tsv(args.data), args.match)
        if args.query is not None:
            if not args.query.strip():
                parser.error('-query must not be empty')
            print_results(args.query, index.search(args.query, args.top_k))
            return

        interactive = sys.stdin.isatty()
        if interactive:
            print('%d FAQ entries loaded. Type a question, or Ctrl-D to quit.'
                  % len(index.questions))
        while True:
            if interactive:
                print('> ', end='', flush=True)
            line = sys.stdin.readline()
            if not line:
                break
            query = line.strip()
            if query:
                print_results(query, index.search(query, args.top_k))


if __name__ == '__main__':
    main()
