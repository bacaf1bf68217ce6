import io

import pytest
from PIL import Image

from tests import image_factory
from transforms.tasks.decode import (
    MAX_JPEG_SCANS,
    DecodeError,
    DecodeSettings,
    EmptyFileError,
    PixelLimitError,
    ScanLimitError,
    TruncatedImageError,
    UnsupportedFormatError,
    decode_image,
    heif_available,
    jpeg_scan_count,
    working_size,
)


def test_jpeg_decodes_to_rgb():
    decoded = decode_image(image_factory.jpeg_bytes(64, 48))
    assert (decoded.image.mode, decoded.image.size, decoded.format) == ("RGB", (64, 48), "JPEG")


def test_exif_orientation_is_applied():
    decoded = decode_image(image_factory.exif_rotated_jpeg())
    assert decoded.image.size == (48, 64)


def test_cmyk_becomes_rgb():
    decoded = decode_image(image_factory.cmyk_jpeg())
    assert (decoded.mode, decoded.image.mode) == ("CMYK", "RGB")


def test_16bit_png_is_scaled_not_clipped():
    decoded = decode_image(image_factory.png_16bit())
    assert decoded.mode.startswith("I")
    row = list(decoded.image.convert("L").getdata())[:64]
    # The ramp 0..65535 must map onto 0..255, not saturate after the first pixels.
    assert row[0] == 0 and row[-1] == 255 and 100 < row[32] < 160


def test_palette_transparency_is_flattened_onto_white():
    decoded = decode_image(image_factory.palette_png_with_transparency())
    assert decoded.mode == "P" and decoded.image.mode == "RGB"
    assert decoded.image.getpixel((0, 0)) == (255, 255, 255)
    assert decoded.image.getpixel((16, 12)) == (255, 0, 0)


@pytest.mark.parametrize("mode", ["L", "RGB"])
def test_colour_key_transparency_is_flattened_onto_white(mode):
    image = image_factory.Image.new(mode, (8, 8), 0)
    data = image_factory.encode(image, "PNG", transparency=0 if mode == "L" else (0, 0, 0))
    assert decode_image(data).image.getpixel((3, 3)) == (255, 255, 255)


def test_animated_gif_gives_first_frame():
    decoded = decode_image(image_factory.animated_gif())
    assert decoded.frames == 3
    assert decoded.image.getpixel((0, 0)) == (255, 0, 0)


def test_png_named_jpg_reports_its_real_format():
    assert decode_image(image_factory.png_bytes()).format == "PNG"


@pytest.mark.parametrize(
    ("data", "error"),
    [
        (b"", EmptyFileError),
        (image_factory.truncated_jpeg(), TruncatedImageError),
        (b"just some text" * 10, UnsupportedFormatError),
        (image_factory.bomb_png(), PixelLimitError),
    ],
)
def test_bad_bytes_raise_a_decode_error(data, error):
    with pytest.raises(error) as raised:
        decode_image(data)
    assert isinstance(raised.value, DecodeError)
    assert str(raised.value)


def test_pixel_limit_is_checked_before_decoding():
    # 13000 x 13000 stays under Pillow's hard stop, so our own limit speaks.
    with pytest.raises(PixelLimitError, match="169,000,000 pixels exceeds the limit"):
        decode_image(image_factory.bomb_png(13_000, 13_000))
    with pytest.raises(PixelLimitError, match="decompression bomb"):
        decode_image(image_factory.bomb_png())


def test_a_jpeg_too_short_for_its_header_is_refused_before_decoding():
    data = image_factory.jpeg_with_lying_header(10_000, 10_000)
    assert len(data) < 1000
    with pytest.raises(TruncatedImageError, match="cannot hold"):
        decode_image(data)


def test_a_plain_large_jpeg_still_decodes():
    data = image_factory.encode(image_factory.Image.new("L", (2048, 2048), 128), "JPEG")
    assert decode_image(data).image.size == (2048, 2048)


def test_pixel_limit_is_configurable():
    with pytest.raises(PixelLimitError):
        decode_image(image_factory.jpeg_bytes(64, 48), max_pixels=1000)


def test_formats_outside_the_allow_list_are_refused():
    ppm = image_factory.encode(image_factory._gradient(), "PPM")
    with pytest.raises(UnsupportedFormatError):
        decode_image(ppm)


def test_heic_decodes_only_when_enabled():
    assert heif_available()
    decoded = decode_image(image_factory.heic_bytes(), allow_heif=True)
    assert (decoded.format, decoded.image.size) == ("HEIF", (64, 48))
    with pytest.raises(UnsupportedFormatError):
        decode_image(image_factory.heic_bytes())


def test_jpeg_scans_are_counted_by_segment_not_by_bytes():
    assert jpeg_scan_count(image_factory.jpeg_bytes()) == 1
    assert jpeg_scan_count(image_factory.progressive_jpeg()) == 10
    # The EXIF block holds no scan of its own; the count stops at the first image's end.
    assert jpeg_scan_count(image_factory.exif_rotated_jpeg()) == 1
    twice = image_factory.jpeg_bytes() + image_factory.progressive_jpeg()
    assert jpeg_scan_count(twice) == 1


def test_junk_between_segments_does_not_hide_scans_and_long_fill_runs_are_cheap():
    bomb = image_factory.scan_bomb_jpeg()
    after_app0 = 4 + int.from_bytes(bomb[4:6], "big")
    # libjpeg skips a stray byte (or FF 00) between segments and decodes every scan.
    for junk in (b"\x00", b"\xff\x00", b"junk"):
        hidden = bomb[:after_app0] + junk + bomb[after_app0:]
        assert jpeg_scan_count(hidden) == jpeg_scan_count(bomb) > MAX_JPEG_SCANS
    # A scan followed by megabytes of 0xFF: one linear pass, not a search per byte.
    data = image_factory.progressive_jpeg()
    start = data.index(b"\xff\xda")
    assert jpeg_scan_count(data[: start + 14] + b"\xff" * 2_000_000) == 1


def test_a_progressive_jpeg_repeating_its_scans_is_refused_before_decoding():
    bomb = image_factory.scan_bomb_jpeg()
    assert jpeg_scan_count(bomb) > MAX_JPEG_SCANS
    with pytest.raises(ScanLimitError, match="scans exceed the limit of 100"):
        decode_image(bomb)
    assert decode_image(image_factory.progressive_jpeg()).image.size == (256, 256)


@pytest.mark.parametrize("file_format", ["JPEG", "PNG", "GIF"])
def test_images_over_the_working_size_shrink_on_load_and_keep_their_own_size(file_format):
    data = image_factory.encode(image_factory._gradient(1200, 800), file_format)
    decoded = decode_image(data, working_pixels=100_000)
    # The largest 3:2 size within 100,000 pixels (a JPEG decodes at 1/2 scale first).
    assert decoded.image.size == (387, 258)
    assert (decoded.width, decoded.height) == (1200, 800)
    assert decoded.scale == pytest.approx(1200 / 387)
    whole = decode_image(data)
    assert whole.image.size == (1200, 800) and whole.scale == 1.0


def test_a_jpeg_far_over_the_working_size_is_decoded_small():
    data = image_factory.encode(image_factory._gradient(1600, 1600), "JPEG")
    image = Image.open(io.BytesIO(data))
    image.draft("RGB", working_size(*image.size, 30_000))
    assert image.size == (200, 200)  # libjpeg's 1/8 scale: no full-size pixels at all
    assert decode_image(data, working_pixels=30_000).image.size == (173, 173)


def test_a_shrunk_turned_photo_reports_its_upright_size():
    exif = image_factory.Image.Exif()
    exif[0x0112] = 6  # stored 1200x800, shown 800x1200
    data = image_factory.encode(image_factory._gradient(1200, 800), "JPEG", exif=exif.tobytes())
    decoded = decode_image(data, working_pixels=100_000)
    assert (decoded.width, decoded.height, decoded.image.size) == (800, 1200, (258, 387))


def test_working_size_has_a_floor():
    with pytest.raises(ValueError, match="--working-pixels must be at least"):
        DecodeSettings(working_pixels=100)
