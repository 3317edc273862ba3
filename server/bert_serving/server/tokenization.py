"""WordPiece tokenization with the classic BERT rules, on the Rust `tokenizers` library.

The pipeline is BERT's: clean the text (drop control characters, map whitespace to spaces),
put spaces around CJK characters so each becomes its own word, lower-case and strip accents
for uncased models, split on whitespace and punctuation, then split each word into the
longest vocabulary pieces (`##` marks a continuation) or `[UNK]` when that fails or the word
is longer than 100 characters. `[CLS]` and `[SEP]` frame the sentence, and truncation cuts
from the right while keeping the final `[SEP]`.

The character rules run here in Python with character classes built from `unicodedata`,
and `tokenizers` does only the whitespace split and WordPiece. Its own BertNormalizer
differs from the classic rules on all-caps Greek (final sigma), on unassigned code points,
on part of CJK Extension E and on characters newer than its Unicode tables.
"""
import re
import sys
import unicodedata
from dataclasses import dataclass
from typing import List, Optional, Sequence

import numpy as np
from tokenizers import Tokenizer
from tokenizers.models import WordPiece
from tokenizers.pre_tokenizers import Split
from tokenizers.processors import TemplateProcessing

CLS, SEP, UNK, PAD = '[CLS]', '[SEP]', '[UNK]', '[PAD]'

# A text of the form 'A ||| B' is the sentence pair (A, B), as in BERT's feature extraction.
_PAIR_PATTERN = re.compile(r'^(.*) \|\|\| (.*)$', re.DOTALL)

# CJK Unified Ideographs and their extensions and compatibility blocks. Hangul, kana and
# other scripts are not in them and are split on whitespace like Latin text.
_CJK_RANGES = [(0x4E00, 0x9FFF), (0x3400, 0x4DBF), (0x20000, 0x2A6DF), (0x2A700, 0x2B73F),
               (0x2B740, 0x2B81F), (0x2B820, 0x2CEAF), (0xF900, 0xFAFF), (0x2F800, 0x2FA1F)]


def _char_class(code_points):
    """Return a regex character class that matches exactly the given code points."""
    ranges, start, previous = [], None, None
    for cp in code_points:
        if start is None:
            start = previous = cp
        elif cp == previous + 1:
            previous = cp
        else:
            ranges.append((start, previous))
            start = previous = cp
    if start is not None:
        ranges.append((start, previous))
    return '[' + ''.join(re.escape(chr(a)) if a == b else '%s-%s' % (re.escape(chr(a)),
                                                                        re.escape(chr(b)))
                         for a, b in ranges) + ']'


class _ClassicNormalizer:
    """BERT's BasicTokenizer rules, up to (not including) the whitespace split."""

    _patterns = None

    @classmethod
    def _build(cls):
        control, whitespace, punctuation, nonspacing = [], [], [], []
        for cp in range(sys.maxunicode + 1):
            char = chr(cp)
            category = unicodedata.category(char)
            # The classic rules map Zs to a space and later split on str.split()
            # whitespace, which also includes the line and paragraph separators.
            if char in ' \t\n\r' or category == 'Zs' or (char.isspace()
                                                            and not category.startswith('C')):
                whitespace.append(cp)
            elif cp == 0 or cp == 0xFFFD or category.startswith('C'):
                control.append(cp)
            if (33 <= cp <= 47 or 58 <= cp <= 64 or 91 <= cp <= 96 or 123 <= cp <= 126
                    or category.startswith('P')):
                punctuation.append(cp)
            if category == 'Mn':
                nonspacing.append(cp)
        cjk = [cp for low, high in _CJK_RANGES for cp in range(low, high + 1)]
        cls._patterns = (re.compile(_char_class(control)), re.compile(_char_class(whitespace)),
                         re.compile(_char_class(cjk)), re.compile(_char_class(nonspacing)),
                         re.compile(_char_class(punctuation)))

    def __init__(self, do_lower_case):
        if _ClassicNormalizer._patterns is None:
            _ClassicNormalizer._build()
        self.do_lower_case = do_lower_case

    def __call__(self, text: str) -> str:
        control, whitespace, cjk, nonspacing, punctuation = self._patterns
        text = whitespace.sub(' ', control.sub('', text))
        text = cjk.sub(r' \g<0> ', text)
        if self.do_lower_case:
            text = nonspacing.sub('', unicodedata.normalize('NFD', text.lower()))
        return punctuation.sub(r' \g<0> ', text)


@dataclass
class TokenizedBatch:
    """Token ids of several sentences, each a list starting with [CLS] unless disabled."""
    input_ids: List[List[int]]
    segment_ids: List[List[int]]
    tokens: Optional[List[List[str]]] = None

    @property
    def lengths(self) -> np.ndarray:
        """int32 array of shape [num_sentences]: tokens per sentence."""
        return np.fromiter((len(ids) for ids in self.input_ids), dtype=np.int32,
                           count=len(self.input_ids))


def truncate_pair(first: list, second: list, max_tokens: int):
    """Shorten two token lists in place to `max_tokens` in all, always from the longer one
    (from the second on a tie), as BERT's truncate_seq_pair does."""
    while len(first) + len(second) > max_tokens:
        if len(first) > len(second):
            first.pop()
        else:
            second.pop()


class BertTokenizer:
    """Turn strings or pre-split token lists into BERT input ids.

    Args:
        vocab_file: path of vocab.txt, one token per line, id = line number.
        do_lower_case: lower-case and strip accents (uncased models).
        max_seq_len: maximum tokens per sentence, special tokens included.
        no_special_token: with pre-split input, add no [CLS] / [SEP].
    """

    def __init__(self, vocab_file, do_lower_case=True, max_seq_len=512, no_special_token=False):
        self.vocab = WordPiece.read_file(vocab_file)
        for token in (CLS, SEP, UNK):
            if token not in self.vocab:
                raise ValueError('vocabulary %s lacks the special token %s' % (vocab_file, token))
        self.cls_id = self.vocab[CLS]
        self.sep_id = self.vocab[SEP]
        self.unk_id = self.vocab[UNK]
        self.max_seq_len = max_seq_len
        self.no_special_token = no_special_token
        # encode_texts reads at most this many characters of a text, which keeps a 10 MB
        # string from stalling the ventilator. Words of up to 100 characters and a space
        # need fewer than 128 characters per token. So the cut changes the result only for
        # text with long runs of whitespace or control characters, or many longer words.
        self.max_chars = max(65_536, 128 * max_seq_len)
        self.normalize = _ClassicNormalizer(do_lower_case)

        tokenizer = Tokenizer(WordPiece(self.vocab, unk_token=UNK, max_input_chars_per_word=100))
        tokenizer.pre_tokenizer = Split(' ', behavior='removed')
        tokenizer.post_processor = TemplateProcessing(
            single='%s $A %s' % (CLS, SEP), special_tokens=[(CLS, self.cls_id), (SEP, self.sep_id)])
        self._tokenizer = tokenizer

    def tokenize(self, text: str) -> List[str]:
        """Return the WordPiece tokens of one text, without [CLS] / [SEP] and untruncated."""
        return self._tokenizer.encode(self.normalize(text), add_special_tokens=False).tokens

    def encode_texts(self, texts: Sequence[str], with_tokens=False) -> TokenizedBatch:
        input_ids, segment_ids, tokens = [], [], []
        singles, pairs = [], []
        for row, text in enumerate(texts):
            text = text[:self.max_chars]
            match = _PAIR_PATTERN.match(text)
            if match:
                pairs.append((row, match.group(1), match.group(2)))
            else:
                singles.append((row, text))
        rows = [None] * len(texts)

        encodings = self._tokenizer.encode_batch([self.normalize(t) for _, t in singles])
        for (row, _), encoding in zip(singles, encodings):
            ids, words = encoding.ids, encoding.tokens
            if len(ids) > self.max_seq_len:
                ids = ids[:self.max_seq_len - 1] + [self.sep_id]
                words = words[:self.max_seq_len - 1] + [SEP]
            rows[row] = (ids, [0] * len(ids), words)

        for row, first, second in pairs:
            first_enc, second_enc = self._tokenizer.encode_batch(
                [self.normalize(first), self.normalize(second)], add_special_tokens=False)
            first_words, second_words = list(first_enc.tokens), list(second_enc.tokens)
            truncate_pair(first_words, second_words, self.max_seq_len - 3)
            words = [CLS] + first_words + [SEP] + second_words + [SEP]
            ids = ([self.cls_id] + first_enc.ids[:len(first_words)] + [self.sep_id]
                   + second_enc.ids[:len(second_words)] + [self.sep_id])
            rows[row] = (ids, [0] * (len(first_words) + 2) + [1] * (len(second_words) + 1), words)

        for ids, segments, words in rows:
            input_ids.append(ids)
            segment_ids.append(segments)
            tokens.append(words)
        return TokenizedBatch(input_ids, segment_ids, tokens if with_tokens else None)

    def encode_tokens(self, token_lists: Sequence[Sequence[str]], with_tokens=False):
        """Look each given token up as-is ([UNK] when missing); no further splitting."""
        input_ids, tokens_out = [], []
        for tokens in token_lists:
            if self.no_special_token:
                tokens = list(tokens[:self.max_seq_len])
            else:
                tokens = [CLS] + list(tokens[:self.max_seq_len - 2]) + [SEP]
            ids = [self.vocab.get(t, self.unk_id) for t in tokens]
            input_ids.append(ids)
            if with_tokens:
                tokens_out.append([t if i != self.unk_id else UNK for t, i in zip(tokens, ids)])
        return TokenizedBatch(input_ids, [[0] * len(ids) for ids in input_ids],
                              tokens_out if with_tokens else None)


def pad_batch(input_ids: Sequence[Sequence[int]], segment_ids: Sequence[Sequence[int]]):
    """Pad sentences to the longest one of the batch.

    Returns:
        (input_ids, segment_ids, lengths): two int32 arrays of shape [batch, max_len] padded
        with 0, and an int32 array of shape [batch].
    """
    lengths = np.fromiter((len(ids) for ids in input_ids), dtype=np.int32, count=len(input_ids))
    width = int(lengths.max()) if len(lengths) else 0
    ids_array = np.zeros((len(input_ids), width), dtype=np.int32)
    segments_array = np.zeros((len(input_ids), width), dtype=np.int32)
    for row, (ids, segments) in enumerate(zip(input_ids, segment_ids)):
        ids_array[row, :len(ids)] = ids
        segments_array[row, :len(segments)] = segments
    return ids_array, segments_array, lengths
