import numpy as np
import pytest
from PIL import Image

from conftest import make_image
from transferkit import ImageReadError, read_image


@pytest.mark.parametrize("mode", ["L", "RGBA", "P", "CMYK", "LA", "1"])
def test_any_mode_becomes_rgb(tmp_path, mode):
    fmt = "JPEG" if mode == "CMYK" else "PNG"
    path = make_image(tmp_path / f"img.{fmt.lower()}", (200, 30, 30), mode=mode, fmt=fmt)
    pixels = read_image(path, (16, 20))
    assert pixels.shape == (16, 20, 3) and pixels.dtype == np.uint8


def test_cmyk_jpeg_keeps_its_colour(tmp_path):
    path = make_image(tmp_path / "cmyk.jpg", (220, 40, 40), mode="CMYK", fmt="JPEG")
    mean = read_image(path, (16, 16)).reshape(-1, 3).mean(axis=0)
    assert mean[0] > 150 and mean[1] < 100 and mean[2] < 100  # still red, not inverted


def test_transparent_pixels_are_laid_on_white(tmp_path):
    path = tmp_path / "clear.png"
    Image.new("RGBA", (8, 8), (0, 0, 0, 0)).save(path)
    assert (read_image(path, (8, 8)) == 255).all()


def test_sixteen_bit_greyscale_is_scaled_not_clipped(tmp_path):
    path = tmp_path / "deep.png"
    Image.fromarray(np.full((8, 8), 32768, dtype=np.uint16)).save(path)
    value = read_image(path, (8, 8))[0, 0, 0]
    assert 100 < value < 160


def test_crop_to_aspect_ratio_takes_the_centre(tmp_path):
    pixels = np.zeros((10, 30, 3), np.uint8)
    pixels[:, 10:20] = 255  # white centre third
    path = tmp_path / "wide.png"
    Image.fromarray(pixels).save(path)
    assert read_image(path, (10, 10), crop_to_aspect_ratio=True).min() == 255
    assert read_image(path, (10, 10)).min() == 0


@pytest.mark.parametrize(
    "content, reason",
    [
        (b"", "empty file"),
        (b"hello, not an image", "not an image"),
    ],
)
def test_bad_files_name_path_and_reason(tmp_path, content, reason):
    path = tmp_path / "bad.jpg"
    path.write_bytes(content)
    with pytest.raises(ImageReadError, match=reason) as info:
        read_image(path, (8, 8))
    assert info.value.path == path and str(path) in str(info.value)


def test_truncated_jpeg_is_reported(tmp_path):
    good = make_image(tmp_path / "good.jpg", (10, 200, 10), size=(64, 64), fmt="JPEG")
    cut = tmp_path / "cut.jpg"
    cut.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(ImageReadError, match="corrupt or truncated"):
        read_image(cut, (8, 8))
