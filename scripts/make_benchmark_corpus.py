"""Regenerate scripts/data/benchmark_corpus.txt: 10,000 sentences for the benchmarks.

The sentences are generated from a small hand-written grammar with a fixed seed, in English
(about two thirds) and Chinese (about one third), from about 5 to about 120 WordPiece tokens,
so that the benchmark gets the mix of short and long text that real traffic has.

    python scripts/make_benchmark_corpus.py
"""
import os
import random

OUTPUT = os.path.join(os.path.dirname(__file__), 'data', 'benchmark_corpus.txt')

SUBJECTS = ['the new search service', 'our support team', 'a customer in Berlin',
            'the nightly batch job', 'this release', 'the mobile app', 'every worker process',
            'the product manager', 'a small startup', 'the research group', 'my old laptop',
            'the billing system', 'a user from Shanghai', 'the recommendation model']
VERBS = ['handles', 'rejects', 'summarizes', 'improves', 'slows down', 'explains', 'ranks',
         'forgets', 'answers', 'indexes', 'translates', 'compares', 'caches', 'clusters']
OBJECTS = ['thousands of short questions', 'the quarterly report', 'every refund request',
           'long product descriptions', 'the FAQ about shipping costs', 'duplicate tickets',
           'reviews written in two languages', 'the error logs from last week',
           'sentences with unusual punctuation', 'the onboarding guide']
CLAUSES = ['because the cache was cold', 'although nobody asked for it',
           'after the database migration finished', 'while the traffic doubled overnight',
           'so the latency stayed below fifty milliseconds', 'unless the queue is full',
           'when the model runs on a CPU', 'before the weekend deployment',
           'even though the documentation says otherwise', 'since the index was rebuilt']
OPENERS = ['Honestly,', 'In practice,', 'Surprisingly,', 'According to the dashboard,',
           'Last Tuesday,', 'For what it is worth,', '']

ZH_SUBJECTS = ['我们的客服团队', '这个搜索服务', '上海的一位用户', '新版本的应用', '推荐模型',
               '夜间批处理任务', '产品经理', '研究小组', '计费系统', '每个工作进程']
ZH_VERBS = ['处理了', '拒绝了', '总结了', '改进了', '解释了', '排序了', '翻译了', '比较了',
            '缓存了', '回答了']
ZH_OBJECTS = ['成千上万个简短的问题', '季度报告', '每一个退款申请', '很长的商品描述',
              '关于运费的常见问题', '重复的工单', '用两种语言写的评论', '上周的错误日志']
ZH_CLAUSES = ['因为缓存还没有预热', '虽然没有人提出这个需求', '在数据库迁移完成之后',
              '当流量在一夜之间翻倍的时候', '所以延迟一直保持在五十毫秒以下', '除非队列已经满了',
              '在周末部署之前', '尽管文档里的说法不一样']


def english(rng):
    parts = [rng.choice(OPENERS), rng.choice(SUBJECTS), rng.choice(VERBS), rng.choice(OBJECTS)]
    for _ in range(rng.choice([0, 0, 1, 1, 2, 3, 4])):
        parts.append(rng.choice(CLAUSES) + ',')
        parts += [rng.choice(SUBJECTS), rng.choice(VERBS), rng.choice(OBJECTS)]
    text = ' '.join(p for p in parts if p).strip(',') + rng.choice(['.', '.', '!', '?'])
    return text[0].upper() + text[1:]


def chinese(rng):
    parts = [rng.choice(ZH_SUBJECTS) + rng.choice(ZH_VERBS) + rng.choice(ZH_OBJECTS)]
    for _ in range(rng.choice([0, 0, 1, 1, 2, 3])):
        parts.append(rng.choice(ZH_CLAUSES) + '，' + rng.choice(ZH_SUBJECTS)
                     + rng.choice(ZH_VERBS) + rng.choice(ZH_OBJECTS))
    return '，'.join(parts) + rng.choice(['。', '。', '！', '？'])


def main():
    rng = random.Random(20261204)
    lines = [english(rng) if rng.random() < 0.67 else chinese(rng) for _ in range(10_000)]
    os.makedirs(os.path.dirname(OUTPUT), exist_ok=True)
    with open(OUTPUT, 'w', encoding='utf-8') as f:
        f.write('\n'.join(lines) + '\n')
    print('wrote %d sentences to %s' % (len(lines), OUTPUT))


if __name__ == '__main__':
    main()
