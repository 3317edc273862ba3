"""Read and check the training files: labeled TSV/CSV for fine-tuning, plain text for pre-training.

Every problem raises `DataError` with the file, the 1-based line and what is wrong, so that
the command line can print it and exit non-zero before any training starts.
"""
import csv
import os
from dataclasses import dataclass
from typing import List, Optional, Sequence


class DataError(ValueError):
    """A training file that is missing, empty, undecodable or malformed."""

    def __init__(self, path, line, problem):
        self.path, self.line, self.problem = path, line, problem
        where = '%s:%d' % (path, line) if line else path
        super().__init__('%s: %s' % (where, problem))


@dataclass
class Example:
    text: str
    text_b: Optional[str]
    label: str
    line: int


def read_lines(path) -> List[str]:
    """Return the lines of a UTF-8 file without line endings.

    Raises:
        DataError: the file is missing or a line is not valid UTF-8.
    """
    if not os.path.isfile(path):
        raise DataError(path, 0, 'file not found')
    lines = []
    with open(path, 'rb') as f:
        for number, raw in enumerate(f, start=1):
            try:
                text = raw.decode('utf-8')
            except UnicodeDecodeError as error:
                problem = ('invalid UTF-8 byte 0x%02x at byte %d of the line; save the file '
                           'as UTF-8' % (raw[error.start], error.start))
                raise DataError(path, number, problem) from None
            if number == 1:
                text = text.lstrip('\ufeff')
            lines.append(text.rstrip('\r\n'))
    return lines


def _delimiter(path, header):
    extension = os.path.splitext(path)[1].lower()
    if extension == '.tsv':
        return '\t'
    if extension == '.csv':
        return ','
    return '\t' if '\t' in header else ','


def read_labeled_file(path, text_column='text', text_b_column='text_b',
                      label_column='label') -> List[Example]:
    """Read a TSV (tab-separated, no quoting) or CSV (comma-separated, standard quoting) file.

    The first row is the header. `text_b_column` is optional: when the header lacks it, each
    example is a single sentence. `.tsv` and `.csv` choose the format; any other extension
    is read as TSV when the header contains a tab.

    Raises:
        DataError: the file is empty, lacks a column, has a row with the wrong number of
            fields, an empty text or an empty label, or has no example after the header.
    """
    lines = read_lines(path)
    if not any(line.strip() for line in lines):
        raise DataError(path, 1, 'empty file; expected a header row with the columns %s, %s'
                        % (text_column, label_column))
    delimiter = _delimiter(path, lines[0])
    if delimiter == '\t':
        rows = csv.reader(lines, delimiter='\t', quoting=csv.QUOTE_NONE)
    else:
        rows = csv.reader(lines, delimiter=',')

    try:
        header = [name.strip() for name in next(rows)]
        columns = {name: index for index, name in enumerate(header)}
        for name, flag in ((text_column, '-text_column'), (label_column, '-label_column')):
            if name not in columns:
                raise DataError(path, 1, 'missing column "%s" in the header row (columns: %s); '
                                'add it or name the column with %s'
                                % (name, ', '.join(header), flag))
        text_index, label_index = columns[text_column], columns[label_column]
        text_b_index = columns.get(text_b_column) if text_b_column else None

        examples = []
        for row in rows:
            line = rows.line_num
            if not row or (len(row) == 1 and not row[0].strip()):
                continue
            if len(row) != len(header):
                raise DataError(path, line, 'expected %d fields (%s) but found %d; check the '
                                'delimiter (%s)' % (len(header), ', '.join(header), len(row),
                                                    'tab' if delimiter == '\t' else 'comma'))
            text = row[text_index].strip()
            label = row[label_index].strip()
            text_b = row[text_b_index].strip() if text_b_index is not None else None
            if not text:
                raise DataError(path, line, 'empty "%s" field' % text_column)
            if text_b_index is not None and not text_b:
                raise DataError(path, line, 'empty "%s" field' % text_b_column)
            if not label:
                raise DataError(path, line, 'empty "%s" field' % label_column)
            examples.append(Example(text, text_b, label, line))
    except csv.Error as error:
        raise DataError(path, rows.line_num, 'malformed row: %s' % error) from None

    if not examples:
        raise DataError(path, 2, 'no examples after the header row')
    return examples


def check_labels(examples: Sequence[Example], labels: Sequence[str], path, train_path):
    """Raise DataError for the first example whose label the training file does not contain."""
    known = set(labels)
    for example in examples:
        if example.label not in known:
            raise DataError(path, example.line, 'unknown label "%s": the training file %s has '
                            'only the labels %s' % (example.label, train_path, ', '.join(labels)))


def check_pairs(examples: Sequence[Example], path, train_has_pairs):
    """Raise DataError when an evaluation file has sentence pairs and the training file not,
    or the other way round."""
    if examples and (examples[0].text_b is not None) != train_has_pairs:
        if train_has_pairs:
            problem = 'the training file has a text_b column but this file has none'
        else:
            problem = 'this file has a text_b column but the training file has none'
        raise DataError(path, 1, problem)


def read_corpus(path) -> List[List[str]]:
    """Read a pre-training corpus: one sentence per line, a blank line between documents.

    Returns:
        The documents, each a list of sentences with surrounding whitespace removed.

    Raises:
        DataError: the file is missing, not UTF-8 or has no sentence.
    """
    documents, current = [], []
    for line in read_lines(path):
        sentence = line.strip()
        if sentence:
            current.append(sentence)
        elif current:
            documents.append(current)
            current = []
    if current:
        documents.append(current)
    if not documents:
        raise DataError(path, 1, 'empty corpus; expected one sentence per line and a blank '
                        'line between documents')
    return documents
