"""Reading one image file into RGB pixels, the same way for training and prediction.

>>> import numpy as np, tempfile, os
>>> from PIL import Image
>>> path = os.path.join(tempfile.mkdtemp(), "grey.png")
>>> Image.new("L", (40, 30), 128).save(path)
>>> read_image(path, (16, 16)).shape
(16, 16, 3)
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

__all__ = ["ImageReadError", "read_image", "IMAGE_EXTENSIONS"]

#: File endings that transferkit looks for when given a folder of images to predict on.
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff")


class ImageReadError(ValueError):
    """A file that cannot be used as an image; ``path`` and ``reason`` say which and why."""

    def __init__(self, path: os.PathLike | str, reason: str):
        self.path = Path(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")


def _to_rgb(img: Image.Image) -> Image.Image:
    """Any PIL mode to RGB; transparent pixels are laid on white rather than on undefined colour."""
    if img.mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")
    if img.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        img = img.convert("RGBA")
        background = Image.new("RGBA", img.size, (255, 255, 255, 255))
        img = Image.alpha_composite(background, img)
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):
        # 16-bit greyscale: scale to 8 bits instead of letting convert() clip at 255.
        array = np.asarray(img, dtype=np.float64)
        scale = 255.0 / 65535.0 if array.max() > 255 else 1.0
        img = Image.fromarray(np.clip(array * scale, 0, 255).round().astype(np.uint8), "L")
    return img if img.mode == "RGB" else img.convert("RGB")


def read_image(
    path: os.PathLike | str,
    image_size: tuple[int, int],
    crop_to_aspect_ratio: bool = False,
) -> np.ndarray:
    """Decode ``path`` to a ``(height, width, 3)`` uint8 array of RGB pixels.

    The EXIF orientation that cameras and phones write is applied first, so the pixels stand as the
    photo was taken. Greyscale, palette, RGBA and CMYK images become RGB; an animated image gives
    its first frame. The image is resized to ``image_size``
    (height, width) with bilinear filtering; with ``crop_to_aspect_ratio`` the largest centred
    crop of the target aspect ratio is taken first instead of squashing.

    Raises:
        ImageReadError: the file is empty, unreadable, not an image, corrupt or truncated, or
            larger than ``PIL.Image.MAX_IMAGE_PIXELS`` (a decompression bomb: refused before decoding).
    """
    path = Path(path)
    height, width = image_size
    try:
        if path.stat().st_size == 0:
            raise ImageReadError(path, "empty file (0 bytes)")
        with warnings.catch_warnings():
            # Pillow only warns between MAX_IMAGE_PIXELS and twice that; refuse those too.
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as img:
                orientation = img.getexif().get(0x0112, 1)
                # JPEG only: decode at a reduced DCT scale that is still at least the target size.
                img.draft("RGB", (width, height))
                img.load()
                if orientation != 1:
                    img = ImageOps.exif_transpose(img)
                img = _to_rgb(img)
    except ImageReadError:
        raise
    except UnidentifiedImageError:
        raise ImageReadError(path, "not an image (format not recognised)") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageReadError(path, f"too large to decode safely ({exc})") from None
    except RecursionError:
        raise ImageReadError(path, "cannot be read (a symbolic link loop?)") from None
    except (OSError, SyntaxError, ValueError, EOFError, Image.DecompressionBombWarning) as exc:
        raise ImageReadError(path, f"corrupt or truncated image ({exc})") from None
    if crop_to_aspect_ratio:
        img = ImageOps.fit(img, (width, height), Image.Resampling.BILINEAR)
    elif img.size != (width, height):
        img = img.resize((width, height), Image.Resampling.BILINEAR)
    return np.asarray(img, dtype=np.uint8)
