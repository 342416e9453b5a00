"""`keras-attention translate`: English -> Spanish with a zoo translator."""

import sys


def add_parser(subparsers):
    parser = subparsers.add_parser(
        "translate", help="translate English sentences into Spanish"
    )
    parser.add_argument("sentences", nargs="*",
                        help="sentences to translate; read from stdin, one per line, if none")
    parser.add_argument("--model", default="translator_en_es",
                        help="zoo model name (default: translator_en_es)")
    parser.add_argument("--beam_size", type=int, default=None,
                        help="beam size (1 = greedy; default: the model's)")
    parser.add_argument("--export", metavar="DIR", default=None,
                        help="write the SavedModel (strings in, strings out) to DIR instead")
    parser.set_defaults(func=run)


def run(args):
    import os

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import zoo

    translator = zoo.load(args.model)
    if getattr(translator, "translate", None) is None:
        raise ValueError(f"{args.model} is not a translator. Received: --model={args.model}")
    if args.export:
        translator.export(args.export, beam_size=args.beam_size)
        print(f"SavedModel written to {args.export}")
        return 0
    sentences = args.sentences or [line.strip() for line in sys.stdin if line.strip()]
    if not sentences:
        raise ValueError("No sentences given (as arguments or on stdin).")
    if args.beam_size is not None and args.beam_size < 1:
        raise ValueError(f"--beam_size must be >= 1. Received: --beam_size={args.beam_size}")
    for translation in translator.translate(sentences, beam_size=args.beam_size):
        print(translation)
    return 0
