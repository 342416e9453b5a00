"""Checks of the inputs of the zoo's task methods and command-line verbs.

A task method checks what it is given with these functions, and a verb passes
the user's input on to the method, so the Python user and the command-line
user get the same one-line error: a `ValueError` or `TypeError` (a
`FileNotFoundError` for a missing file) that names the input and ends with
`Received: ...`.

Example:

```python
from zoo import inputs

sentences = inputs.check_texts(sentences, "sentences")
data = inputs.check_image(path, "images[0]")  # bytes of a PNG or JPEG file
```
"""

import io
import os

IMAGE_FORMATS = ("PNG", "JPEG")


def check_text(value, name):
    """`value` if it is a string with something besides whitespace."""
    if not isinstance(value, str):
        raise TypeError(
            f"`{name}` must be a string. Received: {name}={value!r} of type "
            f"{type(value).__name__}"
        )
    if not value.strip():
        raise ValueError(f"`{name}` must not be empty or whitespace only. "
                         f"Received: {name}={value!r}")
    return value


def check_texts(values, name):
    """`values` as a non-empty list of strings, each passing `check_text`.

    One string is refused rather than read as a list of characters.
    """
    if isinstance(values, (str, bytes)) or not hasattr(values, "__iter__"):
        raise TypeError(f"`{name}` must be a list of strings, not one value. "
                        f"Received: {name}={values!r}")
    values = list(values)
    if not values:
        raise ValueError(f"`{name}` must not be empty. Received: {name}=[]")
    for i, value in enumerate(values):
        check_text(value, f"{name}[{i}]")
    return values


def check_file(path, name, what="file"):
    """`path` as a string if it names an existing file (`what` says which kind)."""
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"`{name}` must be a file path. Received: {name}={path!r}")
    path = check_text(os.fsdecode(path), name)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"`{name}` must be an existing {what}; there is none. "
                                f"Received: {name}={path!r}")
    return path


def check_output_path(path, name, suffix=None):
    """`path` if a file or folder can be written there: its folder exists and,
    with `suffix` (e.g. ".png"), its name ends with it."""
    path = check_text(os.fsdecode(path) if isinstance(path, os.PathLike) else path, name)
    if suffix and not path.lower().endswith(suffix):
        raise ValueError(f"`{name}` must be a {suffix} file. Received: {name}={path!r}")
    parent = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(parent):
        raise FileNotFoundError(f"The folder of `{name}` does not exist: {parent}. "
                                f"Received: {name}={path!r}")
    return path


def check_image_bytes(data, name, received=None):
    """`data` if it is a complete PNG or JPEG file.

    The bytes are decoded with Pillow here, before TensorFlow sees them:
    TensorFlow's decoders log graph-node text to stderr on bad data.
    `received` describes the input in the error (default: the first bytes).
    """
    from PIL import Image

    data = bytes(data)
    received = received or f"{len(data)} bytes starting {data[:8]!r}"
    problem = None
    if not data:
        problem = "it is empty"
    else:
        try:
            with Image.open(io.BytesIO(data)) as image:
                if image.format not in IMAGE_FORMATS:
                    problem = f"it is a {image.format} image"
                else:
                    image.load()
        except Image.UnidentifiedImageError:
            problem = "it is not an image file"
        except (OSError, SyntaxError, ValueError, EOFError) as e:
            problem = f"its image data is truncated or corrupt ({str(e).splitlines()[0]})"
    if problem:
        raise ValueError(f"`{name}` must be a PNG or JPEG image but {problem}. "
                         f"Received: {received}")
    return data


def check_image(path, name):
    """The bytes of the PNG or JPEG file at `path` (see `check_image_bytes`)."""
    path = check_file(path, name, "image file")
    with open(path, "rb") as f:
        return check_image_bytes(f.read(), name, received=f"{name}={path!r}")
