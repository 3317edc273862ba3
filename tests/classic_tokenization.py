"""Classic BERT tokenization in pure Python, the reference for the tokenizer parity tests.

This is an independent implementation of the algorithm of Google's original BERT release
(BasicTokenizer followed by WordpieceTokenizer in google-research/bert tokenization.py).
The tests compare bert_serving.server.tokenization.BertTokenizer, which runs on the Rust
`tokenizers` library, against it. The service does not use this module.
"""
import unicodedata

UNK = '[UNK]'
CONTINUATION_PREFIX = '##'
MAX_WORD_CHARS = 100

# Codepoint ranges, inclusive, of the CJK Unified Ideographs blocks and their extensions
# and of the CJK Compatibility Ideographs. Hangul and kana are not in them.
CJK_RANGES = (
    (0x4E00, 0x9FFF),
    (0x3400, 0x4DBF),
    (0x20000, 0x2A6DF),
    (0x2A700, 0x2B73F),
    (0x2B740, 0x2B81F),
    (0x2B820, 0x2CEAF),
    (0xF900, 0xFAFF),
    (0x2F800, 0x2FA1F),
)

# ASCII symbols such as '$', '+' and '^' have a unicode category starting with 'S',
# yet BERT splits on every printable ASCII character that is neither a letter, a digit
# nor a space.
ASCII_PUNCTUATION_RANGES = ((33, 47), (58, 64), (91, 96), (123, 126))


def load_vocab(vocab_file):
    """Read vocab.txt, one token per line, into a set of tokens."""
    with open(vocab_file, encoding='utf-8') as f:
        return {line.strip() for line in f if line.strip()}


def is_whitespace(char):
    if char in ' \t\n\r':
        return True
    return unicodedata.category(char) == 'Zs'


def is_control(char):
    # Tab, newline and carriage return are in category Cc, but BERT treats them as whitespace.
    if char in '\t\n\r':
        return False
    return unicodedata.category(char).startswith('C')


def is_punctuation(char):
    codepoint = ord(char)
    if any(low <= codepoint <= high for low, high in ASCII_PUNCTUATION_RANGES):
        return True
    return unicodedata.category(char).startswith('P')


def is_cjk(char):
    codepoint = ord(char)
    return any(low <= codepoint <= high for low, high in CJK_RANGES)


def clean_text(text):
    """Drop NUL, U+FFFD and control characters, and turn every whitespace character into ' '."""
    cleaned = []
    for char in text:
        if char in '\x00\ufffd' or is_control(char):
            continue
        cleaned.append(' ' if is_whitespace(char) else char)
    return ''.join(cleaned)


def space_cjk(text):
    """Put a space on both sides of each CJK ideograph, so that it becomes a word of its own."""
    return ''.join(' %s ' % char if is_cjk(char) else char for char in text)


def strip_accents(word):
    """Decompose to NFD and drop the nonspacing marks (category Mn), such as accents."""
    decomposed = unicodedata.normalize('NFD', word)
    return ''.join(char for char in decomposed if unicodedata.category(char) != 'Mn')


def split_punctuation(word):
    """Split a word so that each punctuation character is a piece of its own."""
    pieces = []
    current = []
    for char in word:
        if is_punctuation(char):
            if current:
                pieces.append(''.join(current))
                current = []
            pieces.append(char)
        else:
            current.append(char)
    if current:
        pieces.append(''.join(current))
    return pieces


def basic_tokenize(text, do_lower_case):
    """Split a text into words and punctuation characters, before WordPiece."""
    text = space_cjk(clean_text(text))
    words = []
    # str.split() with no argument also splits on U+2028 and U+2029, which clean_text keeps.
    for word in text.split():
        if do_lower_case:
            # Lower-case the whole word before splitting it, so that str.lower() applies
            # its context rules (such as the Greek final sigma) within the word.
            word = strip_accents(word.lower())
        words.extend(split_punctuation(word))
    return words


def wordpiece_tokenize(word, vocab):
    """Split one word into the longest vocabulary pieces from the left, or return [UNK].

    Pieces after the first carry the '##' prefix. The whole word becomes [UNK] when it is
    longer than MAX_WORD_CHARS characters or when some remainder has no matching piece.
    """
    if len(word) > MAX_WORD_CHARS:
        return [UNK]

    pieces = []
    start = 0
    while start < len(word):
        end = len(word)
        match = None
        while end > start:
            candidate = word[start:end]
            if start > 0:
                candidate = CONTINUATION_PREFIX + candidate
            if candidate in vocab:
                match = candidate
                break
            end -= 1
        if match is None:
            return [UNK]
        pieces.append(match)
        start = end
    return pieces


def truncate_pair(tokens_a, tokens_b, max_tokens):
    """Shorten two token lists in place to max_tokens in total, always cutting the longer one.

    On equal lengths the second list is cut, as in BERT's truncate_seq_pair.
    """
    while len(tokens_a) + len(tokens_b) > max_tokens:
        if len(tokens_a) > len(tokens_b):
            tokens_a.pop()
        else:
            tokens_b.pop()


class ClassicTokenizer:
    """Classic BERT tokenization of a text into WordPiece tokens, without [CLS] / [SEP]."""

    def __init__(self, vocab_file, do_lower_case=True):
        self.vocab = load_vocab(vocab_file)
        self.do_lower_case = do_lower_case

    def tokenize(self, text):
        tokens = []
        for word in basic_tokenize(text, self.do_lower_case):
            tokens.extend(wordpiece_tokenize(word, self.vocab))
        return tokens
