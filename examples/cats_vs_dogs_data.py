"""The cats-vs-dogs example's data, downloaded once into Keras's file cache (used by the examples).

>>> cats_vs_dogs(cache_dir="/nonexistent-offline")  # doctest: +SKIP
PosixPath('~/.keras/datasets/cats_and_dogs_filtered_extracted/cats_and_dogs_filtered')
"""

from __future__ import annotations

import os
import socket
import urllib.parse
from pathlib import Path

__all__ = ["cats_vs_dogs", "DownloadError", "CATS_VS_DOGS_URL"]

#: The archive the TensorFlow transfer-learning tutorial uses: train 1000+1000, validation 500+500.
CATS_VS_DOGS_URL = "https://storage.googleapis.com/mledu-datasets/cats_and_dogs_filtered.zip"


class DownloadError(RuntimeError):
    """The data could not be downloaded (no network, or the server refused)."""


def _check_reachable(url: str, timeout: float = 10.0) -> None:
    host = urllib.parse.urlparse(url).hostname
    try:
        socket.create_connection((host, 443), timeout=timeout).close()
    except OSError as exc:
        raise DownloadError(f"Cannot reach {host} to download {url} ({exc}).") from exc


def cats_vs_dogs(cache_dir: os.PathLike | str | None = None) -> Path:
    """Path of the cats-vs-dogs folder (``train/`` and ``validation/`` of ``cats/`` and ``dogs/``).

    Downloads and extracts the archive with ``keras.utils.get_file`` the first time; later calls
    find it in the cache (``cache_dir``, default ``~/.keras``) without touching the network.
    """
    import keras

    cache_root = Path(cache_dir or os.environ.get("KERAS_HOME", Path.home() / ".keras"))
    for candidate in (
        cache_root / "datasets" / "cats_and_dogs_filtered_extracted" / "cats_and_dogs_filtered",
        cache_root / "datasets" / "cats_and_dogs_filtered",
    ):
        if (candidate / "train").is_dir() and (candidate / "validation").is_dir():
            return candidate
    _check_reachable(CATS_VS_DOGS_URL)
    try:
        extracted = Path(
            keras.utils.get_file(
                "cats_and_dogs_filtered.zip", CATS_VS_DOGS_URL, extract=True, cache_dir=str(cache_root)
            )
        )
    except Exception as exc:
        raise DownloadError(f"Downloading {CATS_VS_DOGS_URL} failed: {exc}") from exc
    for candidate in (extracted / "cats_and_dogs_filtered", extracted):
        if (candidate / "train").is_dir():
            return candidate
    raise DownloadError(f"The archive from {CATS_VS_DOGS_URL} did not hold train/ and validation/ under {extracted}.")
