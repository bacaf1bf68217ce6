"""Turning untrusted image bytes into oriented 8-bit RGB pixels, or a clear error."""

from __future__ import annotations

import dataclasses
import io
import re
import warnings

import numpy as np
from PIL import Image, ImageOps

DEFAULT_MAX_PIXELS = 100_000_000
# Pillow refuses anything above twice its MAX_IMAGE_PIXELS before we can look.
HARD_MAX_PIXELS = 2 * Image.MAX_IMAGE_PIXELS

# Only these decoders ever see the bytes: fewer parsers, less attack surface.
# JPEG also opens MPO; AVIF is Pillow's own plugin.
ALLOWED_FORMATS = ("JPEG", "PNG", "GIF", "WEBP", "BMP", "TIFF", "AVIF")
HEIF_FORMATS = ("HEIF",)


class DecodeError(ValueError):
    """The bytes are not an image we can decode."""


class EmptyFileError(DecodeError):
    """A zero-byte file."""


class UnsupportedFormatError(DecodeError):
    """Not an image, or an image format we do not accept."""


class TruncatedImageError(DecodeError):
    """The image header parsed but its pixel data is cut short or corrupt."""


class PixelLimitError(DecodeError):
    """More pixels than allowed: a likely decompression bomb."""


@dataclasses.dataclass(frozen=True)
class DecodedImage:
    image: Image.Image  # RGB, EXIF orientation applied
    format: str
    mode: str  # the file's own colour mode, before normalisation
    frames: int


def heif_available() -> bool:
    """Registers the HEIF (HEIC) opener if `pillow-heif` is installed."""
    try:
        import pillow_heif
    except ImportError:
        return False
    pillow_heif.register_heif_opener()
    return True


def decode_image(
    data: bytes, max_pixels: int = DEFAULT_MAX_PIXELS, allow_heif: bool = False
) -> DecodedImage:
    """Decodes image bytes into an oriented RGB image.

    Args:
        data: the file's bytes, untrusted.
        max_pixels: refuse images with more pixels than this (checked from the
            header, before any pixel is decoded).
        allow_heif: also accept HEIF/HEIC (needs `heif_available()` first).

    Returns:
        The first frame as 8-bit RGB with EXIF orientation applied.

    Raises:
        DecodeError: a subclass saying why the bytes were refused.
    """
    if not data:
        raise EmptyFileError("file is empty (0 bytes)")
    formats = ALLOWED_FORMATS + (HEIF_FORMATS if allow_heif else ())
    with warnings.catch_warnings():
        # Pillow's own bomb warning is replaced by our explicit limit below.
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            image = Image.open(io.BytesIO(data), formats=formats)
        except Image.DecompressionBombError as error:
            # Pillow's own hard stop, at twice its MAX_IMAGE_PIXELS.
            raise PixelLimitError(f"{error} (possible decompression bomb)") from error
        except (Image.UnidentifiedImageError, OSError, SyntaxError, ValueError) as error:
            # Pillow names the buffer with its address; an error row must not vary by run.
            reason = re.sub(r" <[^>]* at 0x[0-9a-f]+>", "", str(error))
            raise UnsupportedFormatError(
                f"not a recognised image ({', '.join(formats)}): {reason}"
            ) from error
        pixels = image.width * image.height
        if pixels > max_pixels:
            raise PixelLimitError(
                f"{image.width}x{image.height} = {pixels:,} pixels exceeds the limit of "
                f"{max_pixels:,} (possible decompression bomb)"
            )
        if pixels == 0:
            raise UnsupportedFormatError(f"image has no pixels ({image.width}x{image.height})")
        file_format = image.format or "UNKNOWN"
        frames = getattr(image, "n_frames", 1)
        original_mode = image.mode
        try:
            image.seek(0)
            image.load()
            oriented = ImageOps.exif_transpose(image)
            rgb = to_rgb(oriented)
        except (OSError, SyntaxError, ValueError, EOFError) as error:
            raise TruncatedImageError(f"{file_format} pixel data is corrupt: {error}") from error
    return DecodedImage(image=rgb, format=file_format, mode=original_mode, frames=frames)


def to_rgb(image: Image.Image) -> Image.Image:
    """Normalises any Pillow mode to 8-bit RGB; transparency is flattened onto white."""
    if image.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        image = _scale_to_8bit(image)
    if "transparency" in image.info and image.mode in ("P", "L", "RGB"):
        # Palette and colour-key (tRNS) transparency: flatten like an alpha channel.
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    if image.mode != "RGB":
        image = image.convert("RGB")
    return image


def _scale_to_8bit(image: Image.Image) -> Image.Image:
    """Maps high-bit-depth greyscale to 0-255 by its real range, not by clipping."""
    array = np.asarray(image, dtype=np.float32)
    if image.mode.startswith("I;16"):
        low, high = 0.0, 65535.0
    else:
        low, high = float(array.min()), float(array.max())
    span = high - low or 1.0
    scaled = np.clip((array - low) * (255.0 / span), 0, 255).round().astype(np.uint8)
    return Image.fromarray(scaled)
