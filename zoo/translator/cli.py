"""`keras-attention translate`: English -> Spanish with a zoo translator.

```
keras-attention translate "Where is the library?" "I like cats."
keras-attention translate --beam_size=1 < sentences.txt
keras-attention translate --export /tmp/translator_savedmodel
```
"""

import sys

from zoo import inputs
from zoo.cli import positive_int


def add_parser(subparsers):
    parser = subparsers.add_parser(
        "translate", help="translate English sentences into Spanish"
    )
    parser.add_argument("sentences", nargs="*",
                        help="sentences to translate; read from stdin, one per line "
                             "(blank lines skipped), if none")
    parser.add_argument("--model", default="translator_en_es",
                        help="zoo model name (default: translator_en_es)")
    parser.add_argument("--beam_size", type=positive_int, default=None,
                        help="beam size (1 = greedy; default: the model's)")
    parser.add_argument("--export", metavar="DIR", default=None,
                        help="write the SavedModel (strings in, strings out) to DIR instead")
    parser.set_defaults(func=run)


def run(args):
    import os

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import zoo

    if args.export is not None:
        inputs.check_output_path(args.export, "--export")
    translator = zoo.load(args.model)
    if getattr(translator, "translate", None) is None:
        raise ValueError(f"{args.model} is not a translator. Received: --model={args.model}")
    if args.export is not None:
        translator.export(args.export, beam_size=args.beam_size)
        print(f"SavedModel written to {args.export}")
        return 0
    sentences = args.sentences or [line.strip() for line in sys.stdin if line.strip()]
    if not sentences:
        raise ValueError("No sentences given (as arguments or on stdin). "
                         "Received: no argument and no non-blank line on stdin")
    for translation in translator.translate(sentences, beam_size=args.beam_size):
        print(translation)
    return 0
