"""Command line of bert-serving-train: the `finetune` and `pretrain` subcommands and their flags."""
import argparse
import os
import sys


def _common_flags(parser, learning_rate, batch_size):
    group = parser.add_argument_group('start model (as bert-serving-start reads it)')
    group.add_argument('-model_dir', type=str, default=None,
                       help='directory of the start model, Google or Hugging Face layout; '
                            'the embedded all-MiniLM-L6-v2 when not given')
    group.add_argument('-tuned_model_dir', type=str, default=None,
                       help='directory of a tuned checkpoint whose weights replace the start '
                            'model\'s, as with bert-serving-start')
    group.add_argument('-config_name', type=str, default='bert_config.json',
                       help='file name of the config in a Google-layout -model_dir')
    group.add_argument('-ckpt_name', type=str, default='bert_model.ckpt',
                       help='checkpoint prefix in a Google-layout -model_dir or -tuned_model_dir')
    group.add_argument('-cased_tokenization', action='store_true', default=False,
                       help='keep case and accents when tokenizing (cased models)')

    group = parser.add_argument_group('training')
    group.add_argument('-output_dir', type=str, required=True,
                       help='directory for the trained model, the resume state (resume/) and '
                            'the results; an existing run in it is resumed')
    group.add_argument('-max_seq_len', type=int, default=128,
                       help='maximum WordPiece tokens per example, [CLS] and [SEP] included')
    group.add_argument('-batch_size', type=int, default=batch_size, help='examples per step')
    group.add_argument('-learning_rate', type=float, default=learning_rate,
                       help='peak learning rate of AdamW')
    group.add_argument('-warmup_proportion', type=float, default=0.1,
                       help='fraction of the steps over which the learning rate rises from 0; '
                            'it then falls linearly to 0 at the last step')
    group.add_argument('-weight_decay', type=float, default=0.01,
                       help='AdamW weight decay, not applied to LayerNorm parameters and biases')
    group.add_argument('-dropout', type=float, default=0.1,
                       help='dropout rate of hidden states and attention probabilities')
    group.add_argument('-seed', type=int, default=0,
                       help='seed of the data order, the masks, the dropout and new heads')
    group.add_argument('-save_steps', type=int, default=200,
                       help='save the resume state every this many steps (0: only at the end '
                            'of each epoch and of the run)')
    group.add_argument('-stop_after', type=int, default=0,
                       help='stop after this many steps of this invocation, saving the resume '
                            'state as an interruption does (0: run to the end)')
    group.add_argument('-log_every', type=int, default=10,
                       help='log progress every this many steps')
    group.add_argument('-verbose', action='store_true', default=False,
                       help='log debug messages')


def get_parser():
    """Return the argument parser of bert-serving-train."""
    parser = argparse.ArgumentParser(
        prog='bert-serving-train',
        description='Fine-tune or continue pre-training a BERT model and save it as a Google '
                    'model directory that bert-serving-start -tuned_model_dir serves.')
    commands = parser.add_subparsers(dest='command', metavar='{finetune,pretrain}')
    commands.required = True

    finetune = commands.add_parser(
        'finetune', help='train a sequence or sentence-pair classifier on a labeled TSV/CSV file',
        description='Fine-tune on a TSV or CSV file with a header row and the columns text, '
                    'label and, for sentence pairs, text_b.')
    finetune.add_argument('-train_file', type=str, required=True,
                          help='labeled training file (.tsv, .csv)')
    finetune.add_argument('-eval_file', type=str, default=None,
                          help='labeled evaluation file; without it, -eval_fraction of the '
                               'training file is held out')
    finetune.add_argument('-eval_fraction', type=float, default=0.1,
                          help='fraction of the training file held out for evaluation when '
                               'no -eval_file is given')
    finetune.add_argument('-text_column', type=str, default='text', help='column of the text')
    finetune.add_argument('-text_b_column', type=str, default='text_b',
                          help='column of the second sentence of a pair; used when present')
    finetune.add_argument('-label_column', type=str, default='label', help='column of the label')
    finetune.add_argument('-epochs', type=int, default=3, help='maximum number of epochs')
    finetune.add_argument('-patience', type=int, default=2,
                          help='stop after this many epochs without a better evaluation macro-F1')
    finetune.add_argument('-baseline', action='store_true', default=False,
                          help='first score logistic regression on the start model\'s frozen '
                               'sentence vectors on the same split')
    _common_flags(finetune, learning_rate=2e-5, batch_size=32)

    pretrain = commands.add_parser(
        'pretrain', help='continue pre-training on a plain-text corpus (masked LM, optional NSP)',
        description='Continue pre-training with the masked-LM objective on a corpus with one '
                    'sentence per line and a blank line between documents.')
    pretrain.add_argument('-corpus_file', type=str, required=True, help='plain-text UTF-8 corpus')
    pretrain.add_argument('-steps', type=int, default=1000, help='number of training steps')
    pretrain.add_argument('-nsp', action='store_true', default=False,
                          help='add the next-sentence prediction objective')
    pretrain.add_argument('-mask_prob', type=float, default=0.15,
                          help='fraction of the WordPiece tokens chosen for prediction')
    pretrain.add_argument('-max_predictions_per_seq', type=int, default=0,
                          help='maximum masked tokens per example (0: round(max_seq_len * '
                               'mask_prob))')
    _common_flags(pretrain, learning_rate=5e-5, batch_size=32)
    return parser


def _check_args(parser, args):
    positive = ['max_seq_len', 'batch_size'] + (['epochs'] if args.command == 'finetune'
                                                else ['steps'])
    for name in positive:
        if getattr(args, name) < 1:
            parser.error('invalid -%s %d: must be 1 or more' % (name, getattr(args, name)))
    not_negative = ['save_steps', 'stop_after'] + (['max_predictions_per_seq']
                                                   if args.command == 'pretrain' else [])
    for name in not_negative:
        if getattr(args, name) < 0:
            parser.error('invalid -%s %d: must be 0 or more' % (name, getattr(args, name)))
    if args.command == 'finetune' and args.patience < 1:
        parser.error('invalid -patience %d: must be 1 or more' % args.patience)
    if not 0 <= args.warmup_proportion <= 1:
        parser.error('invalid -warmup_proportion %g: must be between 0 and 1'
                     % args.warmup_proportion)
    if args.max_seq_len < 4:
        parser.error('invalid -max_seq_len %d: must be 4 or more' % args.max_seq_len)
    if args.learning_rate <= 0:
        parser.error('invalid -learning_rate %g: must be above 0' % args.learning_rate)
    if not 0 <= args.dropout < 1:
        parser.error('invalid -dropout %g: must be in [0, 1)' % args.dropout)
    if args.command == 'finetune' and not 0 < args.eval_fraction < 1:
        parser.error('invalid -eval_fraction %g: must be between 0 and 1' % args.eval_fraction)
    if args.command == 'pretrain' and not 0 < args.mask_prob < 1:
        parser.error('invalid -mask_prob %g: must be between 0 and 1' % args.mask_prob)


def main(argv=None):
    """Run bert-serving-train; exit 1 on invalid data or model, 130 when interrupted."""
    parser = get_parser()
    args = parser.parse_args(argv)
    _check_args(parser, args)
    os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

    from ..helper import set_logger
    from ..model_dir import ModelDirError
    from .data import DataError
    from .loop import Interrupted

    logger = set_logger('TRAIN', args.verbose)
    try:
        if args.command == 'finetune':
            from .finetune import finetune
            finetune(args, logger)
        else:
            from .pretrain import pretrain
            pretrain(args, logger)
    except DataError as error:
        logger.error('invalid training data: %s', error)
        sys.exit(1)
    except (ModelDirError, ValueError, OSError, FloatingPointError) as error:
        logger.error('training failed: %s', error)
        sys.exit(1)
    except Interrupted as stop:
        logger.warning('%s', stop)
        sys.exit(130)


if __name__ == '__main__':
    main()
