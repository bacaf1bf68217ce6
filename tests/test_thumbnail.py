import pytest
from PIL import Image

from transforms.tasks.thumbnail import (
    ThumbnailSettings,
    encode_thumbnail,
    thumbnail_name,
    thumbnail_size,
)


@pytest.mark.parametrize(
    ("size", "max_side", "expected"),
    [
        ((1000, 500), 256, (256, 128)),
        ((500, 1000), 256, (128, 256)),
        ((100, 50), 256, (100, 50)),
        ((5000, 1), 256, (256, 1)),
    ],
)
def test_thumbnail_size_fits_without_enlarging(size, max_side, expected):
    assert thumbnail_size(*size, max_side) == expected


def test_thumbnail_names_never_collide():
    names = ["a.png", "a.png.jpg", "a.jpg", "A.JPG"]
    assert len({thumbnail_name(name) for name in names}) == len(names)


def test_encode_thumbnail_is_a_jpeg_of_the_given_size():
    import io

    data = encode_thumbnail(Image.new("RGB", (300, 200), "red"), (30, 20), quality=80)
    with Image.open(io.BytesIO(data)) as thumbnail:
        assert (thumbnail.format, thumbnail.size) == ("JPEG", (30, 20))


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"max_side": 4}, "--thumbnail-max-side"),
        ({"quality": 0}, "--thumbnail-quality"),
        ({"version": "a/b"}, "thumbnail version"),
    ],
)
def test_thumbnail_settings_validate_at_construction(options, message):
    with pytest.raises(ValueError, match=message):
        ThumbnailSettings(**options)
