"""`keras-attention caption`: captions images with the zoo captioner.

```
keras-attention caption cat.png dog.jpg
keras-attention caption drawing.svg --explain attention.png
keras-attention caption cat.png --export /tmp/captioner_savedmodel
```
"""

import argparse

from zoo import inputs
from zoo.cli import positive_int

DEFAULT_MODEL = "captioner_tuxpaint_openclipart"


def add_parser(subparsers):
    """Adds the `caption` subcommand."""
    parser = subparsers.add_parser(
        "caption", help="caption images (PNG, JPEG or SVG) with the zoo captioner",
        description="Writes an English caption for each image. With --explain, also "
                    "draws the first image with a heat map of the attention over the "
                    "image for every generated word.",
    )
    parser.add_argument("images", nargs="*", metavar="IMAGE", help="image files")
    parser.add_argument("--model", default=DEFAULT_MODEL, help="zoo model name")
    parser.add_argument("--checkpoint", default=None,
                        help="checkpoint folder (default: the zoo's)")
    parser.add_argument("--beam_size", type=positive_int, default=None,
                        help="beam size (default: the model's; 1 is greedy)")
    parser.add_argument("--beam-width", type=positive_int, dest="beam_size",
                        help=argparse.SUPPRESS)  # the old spelling
    parser.add_argument("--explain", metavar="OUT_PNG", default=None,
                        help="write the per-word attention overlay of the first image")
    parser.add_argument("--export", metavar="DIR", default=None,
                        help="also write a TensorFlow SavedModel (encoded image bytes in, "
                             "caption out) to DIR")
    parser.set_defaults(func=run)
    return parser


def run(args):
    if not args.images and args.export is None:
        raise ValueError("Give at least one IMAGE (or --export DIR). Received: no images")
    if args.explain is not None:
        if not args.images:
            raise ValueError("--explain needs an IMAGE. Received: no images")
        inputs.check_output_path(args.explain, "--explain")
    if args.export is not None:
        inputs.check_output_path(args.export, "--export")
    import zoo
    from zoo.captioner.overlay import draw_attention_overlay

    captioner = zoo.load(args.model, directory=args.checkpoint)
    if args.images:
        pixels = captioner.preprocess(args.images)  # each file decoded once
        captions = captioner.caption_pixels(pixels, beam_width=args.beam_size)
        for image, caption, familiarity in zip(args.images, captions,
                                               _familiarity(captioner, pixels)):
            print(f"{image}\t{caption}{familiarity}")
    if args.explain is not None:
        result = captioner.attention_maps(args.images[0], beam_width=args.beam_size)
        draw_attention_overlay(result, args.explain)
        for caption, similarity in result.get("neighbours", []):
            print(f"retrieved\t{similarity:.3f}\t{caption}")
        print(f"attention overlay written to {args.explain}")
    if args.export is not None:
        captioner.export(args.export, beam_width=args.beam_size)
        print(f"SavedModel written to {args.export}")
    return 0


def _familiarity(captioner, pixels):
    """A column per preprocessed image: its distance from the training images, and
    `unfamiliar image` beyond the checkpoint's threshold (nothing without a profile)."""
    if captioner.familiarity_profile is None:
        return [""] * len(pixels)
    distances, familiar = captioner.familiarity_pixels(pixels)
    threshold = float(captioner.familiarity_profile["threshold"])
    return [f"\tdistance {d:.1f} (familiar up to {threshold:.1f})" if ok else
            f"\tunfamiliar image: distance {d:.1f} from the training images (familiar up "
            f"to {threshold:.1f}); the caption is a guess"
            for d, ok in zip(distances, familiar)]
