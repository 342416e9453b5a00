"""`keras-attention explain`: draw what a zoo model attends to, as a PNG.

```
keras-attention explain translator_en_es "Where is the library?" --out map.png
keras-attention explain translator_en_es "Where is the library?" --heads --out heads.png
keras-attention explain captioner_tuxpaint_openclipart cat.png --out cat_words.png
keras-attention explain recommender_ml100k_sasrec 50,181,172 --out history.png
keras-attention explain forecaster_electricity history.csv --time_column=ts --out patches.png
```

What INPUT is and what is drawn depends on the model's task:

- translate: INPUT is an English sentence. The sentence is translated greedily and
  the decoder's cross-attention is drawn, source subwords along x, generated
  subwords down y: one panel per decoder layer (heads averaged), or with
  `--heads` one panel per head of the last layer.
- caption: INPUT is an image file. The captioner's own overlay is drawn: the
  image, then one panel per generated word with its attention over the image.
- recommend: INPUT is a comma-separated list of item ids, oldest first. One panel
  per block: the attention of the next-item prediction over the history items,
  one row per head and a last row with the heads' mean.
- forecast: INPUT is a CSV history (as for `keras-attention forecast`). One panel
  of which past patches (by the offset of their last step) the forecast draws on:
  for each channel, one row per encoder block (attention each patch receives,
  heads and queries averaged) and a row with the attention rollout over the
  blocks (`AttentionMaps.importance`).
"""

import argparse
import os

from zoo import inputs
from zoo.forecaster.cli import add_column_arguments

_TASKS = ("translate", "caption", "recommend", "forecast")
_FILE_INPUTS = {"caption": "image file", "forecast": "CSV file"}  # task: what INPUT names


def add_parser(subparsers):
    """Adds the `explain` subcommand."""
    parser = subparsers.add_parser(
        "explain",
        help="draw a zoo model's attention for one input as a PNG",
        description="Runs a zoo model on one input and draws its attention weights. "
        "INPUT is a sentence (translate), an image file (caption), comma-separated "
        "item ids (recommend) or a CSV history (forecast).",
    )
    parser.add_argument("model", metavar="MODEL", help="zoo model name (see 'list')")
    parser.add_argument("input", metavar="INPUT", help="what the model reads (see above)")
    parser.add_argument("--out", required=True, help="PNG file to write")
    parser.add_argument("--checkpoint", default=None,
                        help="checkpoint folder (default: the zoo's folder of MODEL)")
    parser.add_argument("--heads", action="store_true",
                        help="translate: one panel per head of the last decoder layer")
    parser.add_argument("--user_features", action="append", default=[],
                        metavar="FIELD=VALUE[,FIELD=VALUE...]",
                        help="recommend: user features, for models that take them")
    parser.add_argument("--user_feature", action="append", dest="user_features",
                        help=argparse.SUPPRESS)  # the old spelling
    add_column_arguments(parser, prefix="forecast: ")
    parser.add_argument("--horizon", type=int, default=None,
                        help="forecast: which horizon's model (default: the longest)")
    parser.set_defaults(func=run)
    return parser


def run(args):
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    from zoo import registry

    entry = registry.get_entry(args.model)  # ValueError naming the available models
    if entry.task not in _TASKS:
        raise ValueError(f"explain does not support the task {entry.task!r} of {args.model}.")
    inputs.check_output_path(args.out, "--out", suffix=".png")
    inputs.check_text(args.input, "INPUT")
    if entry.task in _FILE_INPUTS:
        inputs.check_file(args.input, "INPUT", _FILE_INPUTS[entry.task])

    import zoo

    model = zoo.load(args.model, directory=args.checkpoint)
    explain = {"translate": _translate, "caption": _caption, "recommend": _recommend,
               "forecast": _forecast}[entry.task]
    description = explain(model, args)
    print(f"{description} written to {args.out}")
    return 0


def _translate(translator, args):
    from keras_attention.analysis import plot_attention

    maps = translator.attention_maps(args.input)
    translation = translator.translate([args.input], beam_size=1)[0]
    weights = maps["weights"]
    if args.heads:
        plotted, what = weights[-1], f"cross-attention of the {len(weights[-1])} heads of " \
                                     f"the last decoder layer"
    else:
        plotted, what = list(weights), f"cross-attention of {len(weights)} decoder " \
                                       f"layer(s), heads averaged"
    plot_attention(plotted, x_labels=maps["source_tokens"], y_labels=maps["target_tokens"],
                   path=args.out, title=f"{args.input} -> {translation}")
    return f"{args.model}: {what} ({translation!r})"


def _caption(captioner, args):
    from zoo.captioner.overlay import draw_attention_overlay

    result = captioner.attention_maps(args.input)
    draw_attention_overlay(result, args.out)
    return f"{args.model}: attention of {len(result['words'])} word(s) " \
           f"({result['caption']!r})"


def _recommend(recommender, args):
    import numpy as np

    from keras_attention.analysis import plot_attention
    from zoo.recommender.cli import item_titles, parse_user_features, split_ids

    result = recommender.explain(split_ids(args.input, "INPUT"),
                                 user_features=parse_user_features(args.user_features))
    per_block = np.asarray(result["attention_per_block"])  # (L, N, n)
    num_heads = per_block.shape[1]
    panels = [np.concatenate([block, block.mean(axis=0, keepdims=True)]) for block in per_block]
    titles = item_titles(recommender)
    plot_attention(panels, x_labels=[titles.get(i, i) for i in result["item_ids"]],
                   y_labels=[f"head {h}" for h in range(num_heads)] + ["mean"],
                   path=args.out, title=f"{args.model}: attention of the next-item prediction")
    top = result["item_ids"][int(np.argmax(result["attention"]))]
    top = f"{top}, {titles[top]}" if top in titles else top
    return f"{args.model}: attention over {len(result['item_ids'])} history item(s) " \
           f"in {len(per_block)} block(s) (most attended: {top})"


def _forecast(forecaster, args):
    import numpy as np

    from keras_attention.analysis import plot_attention
    from zoo.forecaster import data
    from zoo.forecaster.cli import read_history

    series, history, _ = read_history(forecaster, args.input, args.time_column, args.target,
                                      args.channels, name="INPUT")
    end_time = int(series.timestamps[-1])
    maps = forecaster.attention_maps(history, end_time=end_time, horizon=args.horizon)
    weights = np.asarray(maps.weights)  # (C, layers, heads, N, N)
    received = weights.mean(axis=(2, 3))  # (C, layers, N): attention each patch receives
    rows = np.concatenate([np.concatenate([received[c], maps.importance[c][None]])
                           for c in range(len(maps.channels))])  # (C * (layers + 1), N)
    names = [f"block {i}" for i in range(received.shape[1])] + ["rollout"]
    if len(maps.channels) > 1:
        names = [f"{channel}: {name}" for channel in maps.channels for name in names]
    steps = forecaster.step_seconds // 3600 if forecaster.step_seconds % 3600 == 0 else None
    offsets = [f"{-int(o) * steps}h" if steps else str(-int(o)) for o in maps.patch_end_offsets]
    plot_attention(rows, x_labels=offsets, y_labels=names,
                   path=args.out,
                   title=forecaster.name)
    top = offsets[int(np.argmax(maps.importance.mean(axis=0)))]
    return f"{args.model}: attention of the forecast after {data.format_time(end_time)} " \
           f"over {weights.shape[-1]} past patch(es) of {len(maps.channels)} channel(s) " \
           f"(x: steps from the history end to the patch end; most attended: {top})"
