"""Reference captioners computed in the same run as the model.

- `most_frequent_caption`: the caption that occurs most often in the training
  set, given to every image.
- `nearest_neighbour_captions`: caption retrieval. Each query image gets the
  main caption of the training image with the highest cosine similarity of
  image features. Two feature kinds are used by the recipe:
  `pixel_features` (the image downsampled to 16x16 RGB, centred on the training
  mean) and the trained encoder's mean-pooled patch features
  (`Captioner.image_features`, also centred).
"""

import collections

import numpy as np

from zoo.captioner.data import normalise_caption


def most_frequent_caption(train_captions):
    """The most frequent main caption of the training images.

    Captions are compared after `normalise_caption`; the count takes every
    caption of every image; ties go to the alphabetically first normalised
    form. Returns the first original spelling of the winner.

    Args:
        train_captions: per image, a list of captions.
    """
    counts = collections.Counter()
    spelling = {}
    for captions in train_captions:
        for caption in captions:
            key = normalise_caption(caption)
            if key:
                counts[key] += 1
                spelling.setdefault(key, caption)
    if not counts:
        raise ValueError("`train_captions` holds no caption with a word. "
                         f"Received: {len(train_captions)} images")
    best = min(counts, key=lambda k: (-counts[k], k))
    return spelling[best]


def pixel_features(images, size=16):
    """Images `(B, S, S, 3)` (uint8 or float in [0, 1]) average-pooled to `size`,
    flattened: `(B, size * size * 3)` float32 in [0, 1]."""
    images = np.asarray(images)
    if images.ndim != 4 or images.shape[1] % size or images.shape[2] % size:
        raise ValueError(f"`images` must be (batch, S, S, channels) with S a multiple of "
                         f"size={size}. Received: shape={images.shape}")
    x = images.astype("float32")
    if images.dtype == np.uint8:
        x /= 255.0
    b, h, w, c = x.shape
    x = x.reshape(b, size, h // size, size, w // size, c).mean(axis=(2, 4))
    return x.reshape(b, -1)


def _unit_rows(x, mean):
    x = np.asarray(x, dtype="float64") - mean
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.maximum(norms, 1e-12)


def nearest_neighbours(train_features, query_features):
    """Index of the training row with the highest cosine similarity, per query.

    Features are centred on the training mean first; ties go to the lowest index.
    """
    train_features = np.asarray(train_features)
    query_features = np.asarray(query_features)
    if train_features.ndim != 2 or query_features.ndim != 2 or \
            train_features.shape[1] != query_features.shape[1] or not len(train_features):
        raise ValueError(
            "`train_features` and `query_features` must be 2-D with the same number of "
            f"columns and at least one training row. Received: shapes "
            f"{train_features.shape} and {query_features.shape}"
        )
    mean = train_features.mean(axis=0, keepdims=True)
    similarity = _unit_rows(query_features, mean) @ _unit_rows(train_features, mean).T
    return np.argmax(similarity, axis=1)


def nearest_neighbour_captions(train_features, train_captions, query_features):
    """The main caption of the nearest training image for each query (see module doc)."""
    if len(train_captions) != len(train_features):
        raise ValueError(
            "`train_captions` needs one entry per training feature row. Received: "
            f"{len(train_captions)} captions for {len(train_features)} rows"
        )
    return [train_captions[i][0] for i in nearest_neighbours(train_features, query_features)]
