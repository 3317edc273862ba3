"""WordPiece tokenization with the classic BERT rules, on the Rust `tokenizers` library.

The pipeline is BERT's: clean the text (drop control characters, map whitespace to spaces),
put spaces around CJK characters so each becomes its own word, lower-case and strip accents
for uncased models, split on whitespace and punctuation, then split each word into the
longest vocabulary pieces (`##` marks a continuation) or `[UNK]` when that fails or the word
is longer than 100 characters. `[CLS]` and `[SEP]` frame the sentence, and truncation cuts
from the right while keeping the final `[SEP]`.
"""
import re
from dataclasses import dataclass
from typing import List, Optional, Sequence

import numpy as np
from tokenizers import Tokenizer
from tokenizers.models import WordPiece
from tokenizers.normalizers import BertNormalizer
from tokenizers.pre_tokenizers import BertPreTokenizer
from tokenizers.processors import TemplateProcessing

CLS, SEP, UNK, PAD = '[CLS]', '[SEP]', '[UNK]', '[PAD]'

# A text of the form 'A ||| B' is the sentence pair (A, B), as in BERT's feature extraction.
_PAIR_PATTERN = re.compile(r'^(.*) \|\|\| (.*)$', re.DOTALL)


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
        self.id_to_token = {i: t for t, i in self.vocab.items()}
        self.max_seq_len = max_seq_len
        self.no_special_token = no_special_token

        tokenizer = Tokenizer(WordPiece(self.vocab, unk_token=UNK, max_input_chars_per_word=100))
        tokenizer.normalizer = BertNormalizer(clean_text=True, handle_chinese_chars=True,
                                              strip_accents=do_lower_case,
                                              lowercase=do_lower_case)
        tokenizer.pre_tokenizer = BertPreTokenizer()
        tokenizer.post_processor = TemplateProcessing(
            single='%s $A %s' % (CLS, SEP),
            pair='%s $A %s $B:1 %s:1' % (CLS, SEP, SEP),
            special_tokens=[(CLS, self.cls_id), (SEP, self.sep_id)])
        # The default truncation is longest-first, as BERT's truncate_seq_pair.
        tokenizer.enable_truncation(max_length=max_seq_len)
        self._tokenizer = tokenizer

    def tokenize(self, text: str) -> List[str]:
        """Return the WordPiece tokens of one text, without [CLS] / [SEP] and untruncated."""
        return self._tokenizer.encode(text, add_special_tokens=False).tokens

    def encode_texts(self, texts: Sequence[str], with_tokens=False) -> TokenizedBatch:
        inputs = []
        for text in texts:
            match = _PAIR_PATTERN.match(text)
            inputs.append((match.group(1), match.group(2)) if match else text)
        encodings = self._tokenizer.encode_batch(inputs)
        return TokenizedBatch([e.ids for e in encodings], [e.type_ids for e in encodings],
                              [e.tokens for e in encodings] if with_tokens else None)

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
