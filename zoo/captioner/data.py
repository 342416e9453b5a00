"""Image-caption pairs written by people: Tux Paint stamps and Openclipart drawings.

Two sources, both Debian packages:

- `tuxpaint-stamps-default` (GPL-2): `/usr/share/tuxpaint/stamps/**/NAME.png` or
  `NAME.svg`, with `NAME.txt` whose first line is an English caption written by
  the stamp's author. The caption is the first sentence of that line.
- `openclipart-svg` (public domain): `/usr/share/openclipart/svg/**/*.svg`; the
  caption is the drawing's `<dc:title>`, and its `<dc:description>` is a second
  caption when it passes the same rules. Titles are noisy, so they are cleaned
  by the rules of `clean_title` (see its docstring); a title that does not pass
  drops the drawing. Symbolic links (the same file listed in two folders) are
  skipped.

Both lists are filtered against the English word list of the Debian package
`wamerican` (`/usr/share/dict/words`). At most `max_per_caption` images keep one
caption text (chosen by a hash of their ids), so that a collection of hundreds
of near-identical drawings with one title (playing cards, stars) does not
dominate. The split into train, valid and test is by image, from a hash of
the image id and the split seed, so it does not depend on which other images
are present.

Images become `(image_size, image_size, 3)` RGB in [0, 1]: decoded, transparent
parts composited on white, padded to a square with white and resized with
antialiasing (`preprocess_image_bytes`, TensorFlow core ops, the same function
the exported SavedModel runs). SVG files are rendered once to PNG with cairosvg
into the cache folder (`cache_dir()`, `$KERAS_ATTENTION_CACHE/captions` or
`~/.cache/keras_attention/captions`), and the preprocessed arrays are cached
there as one `.npz` per image size and record list; nothing goes into the
repository.
"""

import dataclasses
import hashlib
import html
import json
import os
import pathlib
import re
import shutil
import subprocess

import numpy as np

TUXPAINT_ROOT = "/usr/share/tuxpaint/stamps"
OPENCLIPART_ROOT = "/usr/share/openclipart/svg"
WORDS_PATH = "/usr/share/dict/words"

PACKAGES = {
    "tuxpaint": "tuxpaint-stamps-default",
    "openclipart": "openclipart-svg",
    "words": "wamerican",
}
SOURCES = ("tuxpaint", "openclipart")
LICENCES = {
    "tuxpaint": "GPL-2.0 (Tux Paint stamps, Debian package tuxpaint-stamps-default)",
    "openclipart": "Public domain (Openclipart, Debian package openclipart-svg)",
}
# Changes whenever a cleaning rule changes, so stale caches are not reused.
RULES_VERSION = 3

_SVG_RENDER_SIZE = 160


def install_command(packages):
    """The shell command that installs Debian `packages`."""
    return "apt-get install -y --no-install-recommends " + " ".join(packages)


def install_packages(packages):
    """Installs Debian `packages` with apt-get (as root), updating the lists if needed.

    Raises:
        RuntimeError: apt-get is missing or failed; the message gives the command.
    """
    packages = list(packages)
    command = install_command(packages)
    if shutil.which("apt-get") is None:
        raise RuntimeError(f"apt-get is not available; install the data with: {command}")
    for attempt in range(2):
        if attempt:
            subprocess.run(["apt-get", "update"], check=False, capture_output=True)
        result = subprocess.run(
            command.split(), check=False, capture_output=True, text=True,
            env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"},
        )
        if result.returncode == 0:
            return
    tail = " ".join(result.stderr.strip().splitlines()[-2:])
    raise RuntimeError(f"`{command}` failed ({tail}). Run it as root, then try again.")


def ensure_data(sources, install=False):
    """Makes sure the Debian packages of `sources` (and the word list) are there.

    Args:
        sources: names from `SOURCES`.
        install: run apt-get (as root) for what is missing. With False (the
            default) nothing is installed: a missing package is an error that
            gives the command to run.

    Raises:
        FileNotFoundError: a package is missing and `install` is False.
    """
    roots = {"tuxpaint": TUXPAINT_ROOT, "openclipart": OPENCLIPART_ROOT}
    missing = [PACKAGES[s] for s in sources if not os.path.isdir(roots[s])]
    if not os.path.isfile(WORDS_PATH):
        missing.append(PACKAGES["words"])
    if not missing:
        return
    if not install:
        raise FileNotFoundError(
            f"Caption data is not installed; install it (as root) with: "
            f"{install_command(missing)} (or let the recipe do it: --install_data=true)"
        )
    install_packages(missing)


# ----------------------------------------------------------------------------- text
_WORD = re.compile(r"[a-z0-9]+")


def caption_words(text):
    """Lower-case word tokens of a caption: runs of letters and digits.

    `"A US 25 cent piece ($.25)."` gives `['a', 'us', '25', 'cent', 'piece', '25']`.
    The vocabulary, the metrics and the baselines all use this tokenization.
    """
    return _WORD.findall(str(text).lower().replace("'", ""))


def normalise_caption(text):
    """The caption as space-joined `caption_words`, the form the metrics compare."""
    return " ".join(caption_words(text))


def first_sentence(line):
    """The first sentence of a line: up to the first `.`, `!` or `?` that is
    followed by a space and an upper-case letter or a parenthesis (so "$.25"
    and "Mr. Smith" style dots inside a sentence stay)."""
    line = " ".join(str(line).split())
    match = re.search(r"[.!?](?=\s+[A-Z(])", line)
    return line[: match.end()] if match else line


_words_cache = {}


def english_words(path=WORDS_PATH):
    """The lower-case words of the `wamerican` word list (possessives dropped)."""
    if path not in _words_cache:
        if not os.path.isfile(path):
            raise FileNotFoundError(
                f"The English word list {path} is missing; install it with: "
                f"{install_command([PACKAGES['words']])}"
            )
        with open(path, encoding="utf-8", errors="replace") as f:
            words = {line.strip().lower() for line in f if "'" not in line}
        _words_cache[path] = frozenset(w for w in words if w)
    return _words_cache[path]


# Titles that name a collection, a theme or a tool rather than the picture.
_COLLECTION = re.compile(
    r"\b(collection|theme|icons?|iconset|cliparts?|clip art|svg|sibmission|submission|"
    r"part of|various|untitled|drawing|image|picture|symbol signs?|gramastar)\b",
    re.IGNORECASE,
)
_CLIPART_BY = re.compile(r"^\s*clip\s*art\s+by\s+[^-]*-\s*", re.IGNORECASE)
_URL_OR_MAIL = re.compile(r"(https?://|www\.|\S+@\S+|\.com\b|\.org\b)", re.IGNORECASE)


def _split_identifier(text):
    text = re.sub(r"([a-z])([A-Z])", r"\1 \2", text)  # camelCase -> camel Case
    text = re.sub(r"[^A-Za-z0-9']+", " ", text)  # separators and symbols
    text = re.sub(r"(?<=[A-Za-z])\d+|\d+(?=[A-Za-z])", " ", text)  # guitar2, 01dog
    return text


def clean_title(title, words=None, max_words=10):
    """Cleans an Openclipart `<dc:title>` into a caption, or returns None to drop it.

    Rules, in order:

    1. HTML entities are decoded; a leading "Clipart by NAME - " is removed.
    2. Titles that name a collection or a tool instead of the picture (they
       contain words such as "collection", "theme", "icons", "clipart", "svg",
       "part of", "various", "drawing", "image") are dropped.
    3. Underscores, dashes and other separators become spaces; camelCase is
       split; digits glued to letters are cut off ("guitar2" -> "guitar");
       numbers alone are removed.
    4. What remains must be 1 to `max_words` words, each of them in the English
       word list, at least one with three letters or more; otherwise the title is
       dropped (this removes titles in other languages, and codes like "fc23").
    5. The first letter is upper-cased.

    Args:
        title: the raw title text.
        words: the English word set; defaults to `english_words()`.
        max_words: longest caption kept, in words.
    """
    words = english_words() if words is None else words
    text = html.unescape(str(title or "")).strip()
    text = _CLIPART_BY.sub("", text)
    if not text or _COLLECTION.search(text) or _URL_OR_MAIL.search(text):
        return None
    tokens = [t for t in _split_identifier(text).split() if not t.isdigit()]
    if not 1 <= len(tokens) <= max_words:
        return None
    lowered = [t.lower().replace("'", "") for t in tokens]
    if any(t not in words for t in lowered) or not any(len(t) >= 3 for t in lowered):
        return None
    caption = " ".join(tokens)
    return caption[0].upper() + caption[1:]


def clean_description(description, title, words=None, max_words=20):
    """Cleans an Openclipart `<dc:description>` into a second caption, or None.

    Kept only when, after `first_sentence`, it has 2 to `max_words` words, no
    URL or e-mail address, at least 80% of its words in the English word list,
    and differs from the cleaned title.
    """
    words = english_words() if words is None else words
    text = first_sentence(html.unescape(str(description or "")).strip())
    if not text or _URL_OR_MAIL.search(text):
        return None
    tokens = caption_words(text)
    if not 2 <= len(tokens) <= max_words:
        return None
    known = sum(t in words for t in tokens if not t.isdigit())
    if known < 0.8 * len(tokens):
        return None
    if title is not None and normalise_caption(text) == normalise_caption(title):
        return None
    return text


# --------------------------------------------------------------------------- records
@dataclasses.dataclass(frozen=True)
class CaptionRecord:
    """One image with its human-written captions.

    Attributes:
        id: stable id, `"<source>/<path without extension>"`.
        source: `"tuxpaint"` or `"openclipart"`.
        path: the image file (PNG, or SVG to render).
        captions: one or more captions, the first being the main one.
    """

    id: str
    source: str
    path: str
    captions: tuple


def read_tuxpaint(root=TUXPAINT_ROOT):
    """Records of the Tux Paint stamps under `root`.

    A stamp is `NAME.txt` beside `NAME.png` (preferred) or `NAME.svg`; its caption
    is the first sentence of the text file's first line. Stamps without an image
    or with an empty first line are skipped.

    Raises:
        FileNotFoundError: `root` is missing (with the install command).
    """
    root = pathlib.Path(root)
    if not root.is_dir():
        raise FileNotFoundError(
            f"Tux Paint stamps not found at {root}; install them with: "
            f"{install_command([PACKAGES['tuxpaint']])}"
        )
    records = []
    for text_path in sorted(root.rglob("*.txt")):
        base = text_path.with_suffix("")
        image = next((base.with_suffix(s) for s in (".png", ".svg")
                      if base.with_suffix(s).is_file()), None)
        if image is None:
            continue
        with open(text_path, encoding="utf-8", errors="replace") as f:
            line = f.readline().strip()
        caption = first_sentence(line)
        if not caption_words(caption):
            continue
        rel = base.relative_to(root).as_posix()
        records.append(CaptionRecord(f"tuxpaint/{rel}", "tuxpaint", str(image), (caption,)))
    return records


_TITLE = re.compile(r"<dc:title>(.*?)</dc:title>", re.DOTALL)
_DESCRIPTION = re.compile(r"<dc:description>(.*?)</dc:description>", re.DOTALL)


def read_openclipart(root=OPENCLIPART_ROOT, words=None):
    """Records of the Openclipart drawings under `root` whose title passes `clean_title`.

    Raises:
        FileNotFoundError: `root` is missing (with the install command).
    """
    root = pathlib.Path(root)
    if not root.is_dir():
        raise FileNotFoundError(
            f"Openclipart drawings not found at {root}; install them with: "
            f"{install_command([PACKAGES['openclipart']])}"
        )
    words = english_words() if words is None else words
    records = []
    for path in sorted(root.rglob("*.svg")):
        if path.is_symlink() or not path.is_file():
            continue
        with open(path, encoding="utf-8", errors="replace") as f:
            text = f.read(200_000)
        title = _TITLE.search(text)
        caption = clean_title(title.group(1) if title else None, words)
        if caption is None:
            continue
        captions = [caption]
        description = _DESCRIPTION.search(text)
        if description:
            extra = clean_description(description.group(1), caption, words)
            if extra is not None:
                captions.append(extra)
        rel = path.with_suffix("").relative_to(root).as_posix()
        records.append(CaptionRecord(f"openclipart/{rel}", "openclipart", str(path),
                                     tuple(captions)))
    return records


def _hash_unit(text, seed):
    digest = hashlib.sha256(f"{seed}:{text}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2.0**64


def cap_per_caption(records, max_per_caption, seed=0):
    """Keeps at most `max_per_caption` records per main-caption text (0 keeps all).

    The kept ones are those with the smallest hash of `(seed, id)`, so the choice
    is deterministic and does not depend on the order of `records`.
    """
    if max_per_caption <= 0:
        return list(records)
    groups = {}
    for record in records:
        groups.setdefault(normalise_caption(record.captions[0]), []).append(record)
    keep = set()
    for group in groups.values():
        group.sort(key=lambda r: _hash_unit(r.id, f"cap{seed}"))
        keep.update(r.id for r in group[:max_per_caption])
    return [r for r in records if r.id in keep]


def split_of(record_id, seed=0, valid_fraction=0.1, test_fraction=0.1):
    """`"train"`, `"valid"` or `"test"` for an image id, from a hash with `seed`."""
    u = _hash_unit(record_id, seed)
    if u < test_fraction:
        return "test"
    if u < test_fraction + valid_fraction:
        return "valid"
    return "train"


def read_records(sources=SOURCES, max_per_caption=3, seed=0, tuxpaint_root=TUXPAINT_ROOT,
                 openclipart_root=OPENCLIPART_ROOT, words=None):
    """The records of `sources`, capped per caption (see `cap_per_caption`)."""
    unknown = [s for s in sources if s not in SOURCES]
    if unknown or not sources:
        raise ValueError(f"`sources` must be a non-empty subset of {SOURCES}. "
                         f"Received: sources={tuple(sources)}")
    records = []
    if "tuxpaint" in sources:
        records += read_tuxpaint(tuxpaint_root)
    if "openclipart" in sources:
        records += read_openclipart(openclipart_root, words)
    return cap_per_caption(records, max_per_caption, seed)


# ---------------------------------------------------------------------------- images
def cache_dir(path=None):
    """The folder for rendered SVGs and preprocessed arrays (created if needed).

    `path` if given, else `$KERAS_ATTENTION_CACHE/captions`, else
    `~/.cache/keras_attention/captions`.
    """
    if not path:
        base = os.environ.get("KERAS_ATTENTION_CACHE")
        base = pathlib.Path(base) if base else pathlib.Path.home() / ".cache" / "keras_attention"
        path = base / "captions"
    path = pathlib.Path(path)
    path.mkdir(parents=True, exist_ok=True)
    return path


def render_svg(path, cache, size=_SVG_RENDER_SIZE):
    """PNG bytes of an SVG file, rendered once with cairosvg into `cache/renders`.

    The longer side is `size` pixels. Returns None when the SVG cannot be rendered.
    """
    key = hashlib.sha256(f"{os.path.abspath(path)}:{size}".encode()).hexdigest()[:32]
    target = pathlib.Path(cache) / "renders" / f"{key}.png"
    if target.is_file():
        return target.read_bytes()
    try:
        import cairosvg
    except ImportError as e:
        raise ImportError(
            "Rendering SVG images needs cairosvg and the cairo library: "
            "`pip install cairosvg` (and `apt-get install libcairo2`)."
        ) from e
    try:
        data = cairosvg.svg2png(url=str(path), output_width=size)
    except Exception:  # noqa: BLE001 - malformed SVGs take many forms; skip them
        return None
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_suffix(f".tmp-{os.getpid()}")
    tmp.write_bytes(data)
    os.replace(tmp, target)
    return data


def preprocess_image_bytes(data, image_size):
    """Encoded PNG or JPEG bytes (a scalar string tensor) -> `(S, S, 3)` float32 in [0, 1].

    TensorFlow core ops only: decode (PNG as RGBA, JPEG as RGB), composite
    transparent parts on white, pad to a square with white, resize with
    antialiasing. Used for training data, `Captioner.caption` and the exported
    SavedModel alike.
    """
    import tensorflow as tf

    def decode_png():
        return tf.image.convert_image_dtype(tf.io.decode_png(data, channels=4), tf.float32)

    def decode_jpeg():
        rgb = tf.image.convert_image_dtype(tf.io.decode_jpeg(data, channels=3), tf.float32)
        return tf.concat([rgb, tf.ones_like(rgb[..., :1])], axis=-1)

    rgba = tf.cond(tf.io.is_jpeg(data), decode_jpeg, decode_png)  # (H, W, 4)
    alpha = rgba[..., 3:]
    rgb = rgba[..., :3] * alpha + (1.0 - alpha)  # on white
    shape = tf.shape(rgb)
    height, width = shape[0], shape[1]
    side = tf.maximum(height, width)
    top, left = (side - height) // 2, (side - width) // 2
    rgb = tf.pad(rgb, [[top, side - height - top], [left, side - width - left], [0, 0]],
                 constant_values=1.0)
    rgb = tf.image.resize(rgb, (image_size, image_size), method="area")
    return tf.clip_by_value(rgb, 0.0, 1.0)


_preprocess_fns = {}


def decode_image(data, image_size):
    """`preprocess_image_bytes` on Python bytes, as a NumPy `(S, S, 3)` float32 array."""
    import tensorflow as tf

    fn = _preprocess_fns.get(image_size)
    if fn is None:
        fn = tf.function(
            lambda d: preprocess_image_bytes(d, image_size),
            input_signature=[tf.TensorSpec((), tf.string)],
        )
        _preprocess_fns[image_size] = fn
    try:
        return fn(tf.constant(data)).numpy()
    except tf.errors.InvalidArgumentError as e:
        raise ValueError(
            f"Could not decode an image (PNG or JPEG expected): {e.message.splitlines()[0]}. "
            f"Received: {len(data)} bytes starting {bytes(data[:8])!r}"
        ) from None


def record_image(record, image_size, cache):
    """The preprocessed image of a record, or None if it cannot be read or is blank."""
    if record.path.lower().endswith(".svg"):
        data = render_svg(record.path, cache)
        if data is None:
            return None
    else:
        data = pathlib.Path(record.path).read_bytes()
    try:
        image = decode_image(data, image_size)
    except ValueError:
        return None
    if float(image.std()) < 0.02:  # a blank (all white or one colour) picture
        return None
    return image


@dataclasses.dataclass
class CaptionData:
    """Preprocessed images and captions of one split.

    Attributes:
        ids: image ids.
        images: `(N, S, S, 3)` uint8.
        captions: per image, a list of captions (the references).
    """

    ids: list
    images: np.ndarray
    captions: list

    def __len__(self):
        return len(self.ids)

    def float_images(self):
        """The images as float32 in [0, 1]."""
        return self.images.astype("float32") / 255.0

    def subset(self, count):
        """The first `count` images."""
        return CaptionData(self.ids[:count], self.images[:count], self.captions[:count])


def load_splits(records, image_size=64, cache=None, seed=0, valid_fraction=0.1,
                test_fraction=0.1, verbose=True):
    """Preprocesses the images of `records` (cached) and splits them by image.

    Returns:
        `(splits, stats)`: `{"train": CaptionData, "valid": ..., "test": ...}` and a
        dict of counts (records, images kept, images dropped as unreadable/blank).
    """
    cache = cache_dir(cache)
    listing = json.dumps([[r.id, r.path, list(r.captions)] for r in records])
    key = hashlib.sha256(f"{RULES_VERSION}:{image_size}:{listing}".encode()).hexdigest()[:16]
    array_path = cache / f"images-{image_size}-{key}.npz"
    if array_path.is_file():
        with np.load(array_path) as stored:
            images, kept = stored["images"], stored["kept"]
    else:
        images, kept = [], []
        for i, record in enumerate(records):
            image = record_image(record, image_size, cache)
            if image is not None:
                images.append(np.round(image * 255.0).astype("uint8"))
                kept.append(i)
            if verbose and (i + 1) % 500 == 0:
                print(f"  preprocessed {i + 1}/{len(records)} images")
        images = np.stack(images) if images else np.zeros((0, image_size, image_size, 3),
                                                          "uint8")
        kept = np.asarray(kept, dtype="int64")
        tmp = array_path.with_name(f"{array_path.stem}.tmp-{os.getpid()}.npz")
        np.savez(tmp, images=images, kept=kept)
        os.replace(tmp, array_path)
    parts = {name: ([], [], []) for name in ("train", "valid", "test")}
    for image, index in zip(images, kept):
        record = records[int(index)]
        name = split_of(record.id, seed, valid_fraction, test_fraction)
        parts[name][0].append(record.id)
        parts[name][1].append(image)
        parts[name][2].append(list(record.captions))
    splits = {}
    for name, (ids, imgs, caps) in parts.items():
        array = np.stack(imgs) if imgs else np.zeros((0, image_size, image_size, 3), "uint8")
        splits[name] = CaptionData(ids, array, caps)
    stats = {
        "records": len(records),
        "images": len(kept),
        "dropped_unreadable_or_blank": int(len(records) - len(kept)),
        **{f"{name}_images": len(data) for name, data in splits.items()},
        **{f"{source}_images": int(sum(records[int(i)].source == source for i in kept))
           for source in SOURCES},
    }
    return splits, stats
