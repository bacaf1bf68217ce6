"""Generated test images, including hostile and awkward ones."""

from __future__ import annotations

import io
import os
import struct
import zlib

import numpy as np
from PIL import Image


def _gradient(width: int = 64, height: int = 48) -> Image.Image:
    x = np.linspace(0, 255, width, dtype=np.uint8)
    y = np.linspace(0, 255, height, dtype=np.uint8)
    red = np.tile(x, (height, 1))
    green = np.tile(y[:, None], (1, width))
    blue = np.full((height, width), 128, dtype=np.uint8)
    return Image.fromarray(np.stack([red, green, blue], axis=-1))


def encode(image: Image.Image, file_format: str, **params) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=file_format, **params)
    return buffer.getvalue()


def jpeg_bytes(width: int = 64, height: int = 48) -> bytes:
    return encode(_gradient(width, height), "JPEG", quality=90)


def png_bytes(width: int = 64, height: int = 48) -> bytes:
    return encode(_gradient(width, height), "PNG")


def _png_chunk(kind: bytes, payload: bytes) -> bytes:
    crc = zlib.crc32(kind + payload) & 0xFFFFFFFF
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", crc)


def bomb_png(width: int = 100_000, height: int = 100_000) -> bytes:
    """A valid PNG header claiming 10 gigapixels over a few bytes of data."""
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", header)
        + _png_chunk(b"IDAT", zlib.compress(b"\x00" * 1024))
        + _png_chunk(b"IEND", b"")
    )


def cmyk_jpeg() -> bytes:
    return encode(_gradient().convert("CMYK"), "JPEG", quality=90)


def png_16bit() -> bytes:
    ramp = np.tile(np.linspace(0, 65535, 64).astype(np.uint16), (48, 1))
    return encode(Image.fromarray(ramp), "PNG")


def palette_png_with_transparency() -> bytes:
    """Palette index 0 (black) is transparent and fills the border; index 1 is red."""
    image = Image.new("P", (32, 24), 0)
    image.putpalette([0, 0, 0, 255, 0, 0] + [0, 0, 0] * 254)
    image.paste(1, (8, 8, 24, 16))
    return encode(image, "PNG", transparency=0)


def animated_gif() -> bytes:
    frames = [Image.new("RGB", (32, 24), color) for color in ("red", "green", "blue")]
    return encode(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=100)


def exif_rotated_jpeg() -> bytes:
    """64x48 stored pixels with EXIF orientation 6: shown as 48x64."""
    exif = Image.Exif()
    exif[0x0112] = 6
    return encode(_gradient(64, 48), "JPEG", exif=exif.tobytes())


def heic_bytes() -> bytes:
    """An iPhone-style HEIC, encoded with pillow-heif's bundled encoder."""
    import pillow_heif

    buffer = io.BytesIO()
    pillow_heif.from_pillow(_gradient()).save(buffer, format="HEIF")
    return buffer.getvalue()


def jpeg_with_lying_header(width: int = 10_000, height: int = 10_000) -> bytes:
    """A complete 16x16 JPEG whose frame header claims `width` x `height`."""
    data = bytearray(jpeg_bytes(16, 16))
    frame = data.index(b"\xff\xc0")  # SOF0: marker, length (2), precision (1), height, width
    data[frame + 5 : frame + 9] = height.to_bytes(2, "big") + width.to_bytes(2, "big")
    return bytes(data)


def progressive_jpeg(width: int = 256, height: int = 256) -> bytes:
    return encode(_gradient(width, height), "JPEG", progressive=True)


def scan_bomb_jpeg(repeats: int = 200) -> bytes:
    """A progressive JPEG whose last scan is repeated: each repeat costs a full pass."""
    data = progressive_jpeg()
    last_scan, end = data.rindex(b"\xff\xda"), data.rindex(b"\xff\xd9")
    return data[:end] + data[last_scan:end] * repeats + data[end:]


def truncated_jpeg() -> bytes:
    data = jpeg_bytes(256, 256)
    return data[: len(data) // 2]


# source path -> bytes; every one of these must decode.
GOOD_FILES = {
    "colour/cmyk.jpg": cmyk_jpeg(),
    "colour/deep.png": png_16bit(),
    "colour/palette.png": palette_png_with_transparency(),
    "motion/animated.gif": animated_gif(),
    "camera/rotated.jpg": exif_rotated_jpeg(),
    "camera/actually-png.jpg": png_bytes(),
    "camera/UPPER.JPG": jpeg_bytes(),
    "camera/iphone.HEIC": heic_bytes(),
    "camera/modern.avif": encode(_gradient(), "AVIF"),
    "names/with space é ü.png": png_bytes(),
    "ünïcode set/日本.jpeg": jpeg_bytes(),
    "root-level.png": png_bytes(),
}

# source path -> (bytes, decode error type)
BAD_FILES = {
    "bad/empty.jpg": (b"", "EmptyFileError"),
    "bad/truncated.jpg": (truncated_jpeg(), "TruncatedImageError"),
    "bad/notes.jpg": (b"shopping list: eggs, milk\n" * 20, "UnsupportedFormatError"),
    "bad/bomb.png": (bomb_png(), "PixelLimitError"),
    "bad/scan-bomb.jpg": (scan_bomb_jpeg(), "ScanLimitError"),
}


def write_files(folder: str, files: dict[str, bytes]) -> None:
    for relative, data in files.items():
        path = os.path.join(folder, relative)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as handle:
            handle.write(data)


def awkward_drop(folder: str, outside_folder: str) -> str:
    """Writes the awkward drop; returns the path of the secret file outside it."""
    write_files(folder, GOOD_FILES)
    write_files(folder, {path: data for path, (data, _) in BAD_FILES.items()})
    secret = os.path.join(outside_folder, "secret.jpg")
    write_files(outside_folder, {"secret.jpg": jpeg_bytes(40, 40)})
    os.symlink(secret, os.path.join(folder, "bad", "outside.jpg"))
    os.symlink(outside_folder, os.path.join(folder, "outside-folder"))
    write_files(folder, {"notes.txt": b"not an image", ".DS_Store": b"\x00"})
    return secret
