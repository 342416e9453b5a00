"""How far an image lies from the images a captioner was trained on.

The captioner was trained on clip art; given a photo it still writes a caption,
usually a wrong one. `fit_familiarity` fits a Gaussian to the encoder's
mean-pooled features of the training images, and an image's distance is its
Mahalanobis distance from that Gaussian (the measure of Lee et al. 2018 for
inputs unlike the training data). The threshold is chosen on the validation
images: their `quantile` (98th percentile by default), so that about 2% of
images like the training data are called unfamiliar.

It is a weak detector for photographs. On the shipped captioner the threshold is
13.9; test images exceed it in 5.4% of cases, and of 18 photographs
(scikit-learn's and matplotlib's sample photos and crops of them) only 5 do:
at 64 x 64 pixels, the encoder's features of a photo lie among those of the
clip art. Uniform noise images are all above it.
"""

import numpy as np

FILE_NAME = "familiarity.npz"


def fit_familiarity(train_features, valid_features, quantile=0.98, ridge=1e-3):
    """The familiarity profile of a captioner.

    Args:
        train_features: `(N, D)` encoder features of the training images.
        valid_features: `(M, D)` features of the validation images.
        quantile: the threshold is this quantile of the validation distances.
        ridge: added to the covariance's diagonal, as a share of its mean variance.

    Returns:
        A dict of NumPy arrays: `mean (D,)`, `precision (D, D)`, `threshold ()` and
        `valid_max ()` (the largest validation distance).
    """
    train = np.asarray(train_features, dtype=np.float64)
    valid = np.asarray(valid_features, dtype=np.float64)
    if train.ndim != 2 or valid.ndim != 2 or train.shape[1] != valid.shape[1] or \
            len(train) < 2 or not len(valid):
        raise ValueError("`train_features` (at least 2 rows) and `valid_features` (at least "
                         "1) must be 2-D with the same number of columns. Received: shapes "
                         f"{train.shape} and {valid.shape}")
    mean = train.mean(axis=0)
    covariance = np.cov(train - mean, rowvar=False)
    covariance += ridge * np.trace(covariance) / len(mean) * np.eye(len(mean))
    profile = {"mean": mean, "precision": np.linalg.inv(covariance)}
    valid_distances = distances(profile, valid)
    profile.update(threshold=np.float64(np.quantile(valid_distances, quantile)),
                   valid_max=np.float64(np.max(valid_distances)))
    return profile


def distances(profile, features):
    """`(B,)` Mahalanobis distances of features `(B, D)` from the training images."""
    centred = np.asarray(features, dtype=np.float64) - profile["mean"]
    squared = np.einsum("bi,ij,bj->b", centred, profile["precision"], centred)
    return np.sqrt(np.maximum(squared, 0.0))


def save_profile(profile, path):
    """Writes a profile as an `.npz` file."""
    with open(path, "wb") as f:
        np.savez(f, **{k: np.asarray(v) for k, v in profile.items()})


def load_profile(path):
    """Reads a profile written by `save_profile`."""
    with np.load(path) as stored:
        return {k: stored[k] for k in ("mean", "precision", "threshold", "valid_max")}
