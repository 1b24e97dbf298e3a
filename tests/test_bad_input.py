"""The bad-input matrix: every case works correctly, or fails with an error that names the file or
value and the fix; nothing crashes mid-epoch, and no user file is touched."""

import io
import os

import numpy as np
import pytest
from PIL import Image

from conftest import make_image, make_tree
from transferkit import ImageFolder, ImageReadError, read_image
from transferkit.cli import main


def _tree_state(root):
    return sorted((str(p), p.lstat().st_size, p.lstat().st_mtime_ns) for p in root.rglob("*"))


def _jpeg_bytes(colour=(200, 30, 30), size=(48, 40)):
    buffer = io.BytesIO()
    Image.new("RGB", size, colour).save(buffer, "JPEG")
    return buffer.getvalue()


def test_every_kind_of_file_is_used_or_skipped_with_its_reason(tmp_path):
    root = make_tree(tmp_path / "pets", {"cats": 4, "dogs": 4})
    cats, dogs = root / "cats", root / "dogs"
    (cats / "zero.jpg").write_bytes(b"")
    (cats / "truncated.jpg").write_bytes(_jpeg_bytes()[:200])
    (cats / "trailing.jpg").write_bytes(_jpeg_bytes() + b"garbage after the end of the image")
    (cats / "text.jpg").write_text("these are my notes, not a photo")
    make_image(cats / "png_named.jpg", (200, 30, 30), fmt="PNG")
    make_image(cats / "cmyk.jpg", (200, 30, 30), mode="CMYK", fmt="JPEG")
    Image.fromarray(np.full((40, 48), 40000, np.uint16)).save(cats / "deep.png")
    make_image(cats / "grey.png", (90, 90, 90), mode="L")
    make_image(dogs / "palette.png", (30, 30, 200), mode="P")
    Image.new("RGBA", (48, 40), (30, 30, 200, 0)).save(dogs / "clear.png")
    frames = [Image.new("RGB", (48, 40), c) for c in ((30, 30, 200), (200, 200, 0))]
    frames[0].save(dogs / "animated.gif", save_all=True, append_images=frames[1:], duration=100, loop=0)
    make_image(dogs / "ünïcödé 猫.png", (30, 30, 200))
    make_image(root / "dogs" / os.fsdecode(b"latin1-\xe9t\xe9.png"), (30, 30, 200))
    (dogs / os.fsdecode(b"broken-\xff.jpg")).write_bytes(b"\xff\xd8\xff")  # a bad file with a non-UTF-8 name
    (dogs / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1")
    (dogs / "._palette.png").write_bytes(b"\x00\x05\x16\x07 AppleDouble")
    (dogs / ".hidden").mkdir()
    make_image(dogs / ".hidden" / "thumb.png", (0, 0, 0))
    os.symlink("loop.jpg", dogs / "loop.jpg")  # a link to itself
    os.symlink("..", dogs / "parent")  # a folder loop
    before = _tree_state(root)

    data = ImageFolder(root, image_size=(16, 16), batch_size=4, split=(0.5, 0.5), seed=0)

    reasons = {s.path.name: s.reason for s in data.report.skipped}
    assert set(reasons) == {"zero.jpg", "truncated.jpg", "text.jpg", os.fsdecode(b"broken-\xff.jpg")}, reasons
    assert "0 bytes" in reasons["zero.jpg"] and "truncated" in reasons["truncated.jpg"]
    assert "not an image" in reasons["text.jpg"]
    used = {p.name for p in data.files("all")}
    for name in ("trailing.jpg", "png_named.jpg", "cmyk.jpg", "deep.png", "grey.png", "palette.png", "clear.png",
                 "animated.gif", "ünïcödé 猫.png", os.fsdecode(b"latin1-\xe9t\xe9.png")):
        assert name in used, name
    assert not {".DS_Store", "._palette.png", "thumb.png", "loop.jpg"} & used  # hidden, or not a file
    assert len(used) == 8 + 10
    assert "broken-\\xff.jpg" in str(data.report)
    str(data.report).encode("utf-8")  # printable, whatever the names
    assert _tree_state(root) == before  # nothing deleted, moved or rewritten
    for images, _ in data.train:  # every batch of an epoch decodes: nothing fails mid-epoch
        assert images.shape[1:] == (16, 16, 3)


def test_colours_survive_every_mode(tmp_path):
    """Red stays red (and blue blue) through palette, CMYK, grey-with-alpha and 16-bit files."""
    red, blue = (210, 30, 30), (30, 30, 210)
    cases = {"palette.png": ("P", "PNG", red), "cmyk.jpg": ("CMYK", "JPEG", red), "rgba.png": ("RGBA", "PNG", blue),
             "plain.jpg": ("RGB", "JPEG", blue)}
    for name, (mode, fmt, colour) in cases.items():
        Image.new("RGB", (20, 20), colour).convert(mode).save(tmp_path / name, fmt)
        mean = read_image(tmp_path / name, (8, 8)).reshape(-1, 3).mean(axis=0)
        expected = np.array(colour)
        assert np.abs(mean - expected).max() < 25, (name, mean)


def test_exif_orientation_is_applied(tmp_path):
    """A phone stores the sensor's pixels and an orientation tag: the picture must stand upright."""
    pixels = np.zeros((40, 80, 3), np.uint8)
    pixels[:, :40] = 255  # stored: white on the left half, black on the right
    image = Image.fromarray(pixels)
    exif = image.getexif()
    exif[0x0112] = 6  # "rotate 90 clockwise to display"
    image.save(tmp_path / "phone.jpg", exif=exif.tobytes(), quality=95)
    upright = read_image(tmp_path / "phone.jpg", (80, 40))  # displayed: 40 wide, 80 high
    assert upright[:30].mean() > 200 and upright[-30:].mean() < 50  # white on top after the turn
    image.save(tmp_path / "plain.jpg", quality=95)
    assert read_image(tmp_path / "plain.jpg", (40, 80))[:, :30].mean() > 200  # no tag: as stored


def test_exif_is_applied_alike_in_training_prediction_and_evaluation(tmp_path, trained, tiny_data):
    trainer, _ = trained
    pixels = np.zeros((32, 32, 3), np.uint8)
    pixels[:, :16] = (220, 40, 40)
    image = Image.fromarray(pixels)
    exif = image.getexif()
    exif[0x0112] = 8
    image.save(tmp_path / "turned.jpg", exif=exif.tobytes(), quality=95)
    expected = read_image(tmp_path / "turned.jpg", (32, 32))
    np.testing.assert_array_equal(trainer.classifier.read_images([tmp_path / "turned.jpg"])[0], expected)
    folder = make_tree(tmp_path / "f", {"cats": 2, "dogs": 2})
    (folder / "cats" / "turned.jpg").write_bytes((tmp_path / "turned.jpg").read_bytes())
    data = ImageFolder(folder, image_size=(32, 32), split=(0.5, 0.5), seed=0)
    position = [p.name for p in data.files("all")].index("turned.jpg")
    np.testing.assert_array_equal(data.images("all")[position], expected)


def test_a_decompression_bomb_is_refused_before_decoding(tmp_path, monkeypatch):
    import resource

    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100_000)
    Image.new("L", (400, 400)).save(tmp_path / "bomb.png")  # 160,000 pixels: above the limit, below twice it
    Image.new("L", (1000, 1000)).save(tmp_path / "big_bomb.png")
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    for name in ("bomb.png", "big_bomb.png"):
        with pytest.raises(ImageReadError, match="too large to decode safely") as info:
            read_image(tmp_path / name, (8, 8))
        assert name in str(info.value)
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 50_000  # KiB: nothing was decoded


def test_folder_errors_name_the_path_and_the_fix(tmp_path):
    with pytest.raises(FileNotFoundError, match="Image folder not found: .*missing"):
        ImageFolder(tmp_path / "missing")
    (tmp_path / "file.jpg").write_bytes(b"x")
    with pytest.raises(NotADirectoryError, match="file.jpg is a file; give the folder"):
        ImageFolder(tmp_path / "file.jpg")
    make_tree(tmp_path / "one", {"cats": 3})
    with pytest.raises(ValueError, match="at least two class folders.*found only 'cats'"):
        ImageFolder(tmp_path / "one")
    make_tree(tmp_path / "two", {"cats": 3})
    (tmp_path / "two" / "dogs").mkdir()
    (tmp_path / "two" / "dogs" / ".DS_Store").write_bytes(b"x")  # hidden files do not count
    with pytest.raises(ValueError, match=r"dogs is empty: put its images there or remove the folder"):
        ImageFolder(tmp_path / "two")


@pytest.mark.parametrize("argv, message", [
    (["--epochs", "-1"], "--epochs -1: give 0 or more epochs"),
    (["--backbone", "resnet9000"], "--backbone 'resnet9000' is not registered; choose one of: .*mobilenet_v2"),
    (["--augmentation", "wild"], "--augmentation wild: choose one of none, default, light, strong"),
    (["--unfreeze-from", "500"], "--unfreeze-from 500 is outside the mobilenet_v2 backbone's layers 0..153"),
    (["--unfreeze-from", "block_99"], "--unfreeze-from 'block_99' is neither a block nor a layer.*blocks: block_1"),
    (["--views", "0"], "--views 0: give at least 1"),
    (["--split", "0.5,0.6"], "sums to 1.1"),
    (["--image-size", "8"], "--image-size 8: give at least 32"),
    (["--image-size", "96x16"], "--image-size 96x16: give at least 32"),
    (["--weights", "nowhere.h5"], "--weights nowhere.h5: no such file"),
])
def test_bad_arguments_fail_before_any_image_is_decoded(tmp_path, capsys, monkeypatch, argv, message):
    import transferkit.data.folder

    root = make_tree(tmp_path / "pets", {"cats": 3, "dogs": 3})
    decoded = []
    monkeypatch.setattr(transferkit.data.folder, "read_image", lambda *a, **k: decoded.append(a) or np.zeros((32, 32, 3)))
    code = main(["train", str(root), "--output", str(tmp_path / "run"), "--weights", "none",
                 "--backbone-option", "alpha=0.35", *argv])
    error = capsys.readouterr().err
    assert code == 2 and decoded == []
    assert __import__("re").search(message, error), error
