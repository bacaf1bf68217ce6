"""The `decode` step: untrusted image bytes to oriented 8-bit RGB pixels, once per
image, or a clear error."""

from __future__ import annotations

import dataclasses
import io
import re
import warnings

import apache_beam as beam
import numpy as np
from PIL import Image, ImageOps

from transforms.per_image import ApplyToEachImage, Outcome
from transforms.records import ImageRecord, StepName
from transforms.settings import setting
from transforms.tasks.base import Step, StepContext

STEP_VERSION = "1"

DEFAULT_MAX_PIXELS = 100_000_000
# Pillow refuses anything above twice its MAX_IMAGE_PIXELS before we can look.
HARD_MAX_PIXELS = 2 * Image.MAX_IMAGE_PIXELS

# A Huffman-coded JPEG spends at least one bit on each 8x8 block of each scan: 512
# pixels per byte at the very most. Fewer bytes than a JPEG's header implies at 4096
# pixels per byte means data is missing, which libjpeg would fill with grey.
JPEG_MAX_PIXELS_PER_BYTE = 4096

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
        if image.format in ("JPEG", "MPO") and len(data) * JPEG_MAX_PIXELS_PER_BYTE < pixels:
            # libjpeg fills what the data does not cover with grey and only warns.
            raise TruncatedImageError(
                f"{len(data):,} bytes cannot hold a {image.width}x{image.height} JPEG: "
                "the file is cut short or its header lies"
            )
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


@dataclasses.dataclass(frozen=True)
class DecodeSettings:
    max_pixels: int = setting(
        DEFAULT_MAX_PIXELS,
        "refuse images with more pixels than this (decompression bombs)",
        flag="--max-pixels",
    )

    def __post_init__(self) -> None:
        if not 1 <= self.max_pixels <= HARD_MAX_PIXELS:
            raise ValueError(
                f"--max-pixels must be between 1 and {HARD_MAX_PIXELS:,}, got {self.max_pixels}"
            )


def decode_record(
    record: ImageRecord, max_pixels: int, allow_heif: bool
) -> tuple[ImageRecord, Outcome]:
    """Decodes a record's bytes; the bytes are dropped once the pixels exist."""
    decoded = decode_image(record.data or b"", max_pixels=max_pixels, allow_heif=allow_heif)
    fields = {
        "width": decoded.image.width,
        "height": decoded.image.height,
        "format": decoded.format,
        "mode": decoded.mode,
        "frames": decoded.frames,
    }
    updated = dataclasses.replace(record, data=None, image=decoded.image, **fields)
    return (
        updated.with_result(StepName.DECODE, {"step_version": STEP_VERSION, **fields}),
        Outcome.PROCESSED,
    )


class _DecodeFunction:
    """Picklable per-image callable that registers the HEIF opener on first use."""

    def __init__(self, max_pixels: int) -> None:
        self._max_pixels = max_pixels
        self._allow_heif: bool | None = None

    def __call__(self, record: ImageRecord) -> tuple[ImageRecord, Outcome]:
        if self._allow_heif is None:
            self._allow_heif = heif_available()
        return decode_record(record, self._max_pixels, self._allow_heif)


@dataclasses.dataclass(eq=False)
class DecodeImages(beam.PTransform):
    """Decodes every image once; undecodable files go to `errors` and stop there.

    Args:
        settings: the pixel limit above which images are refused as likely
            decompression bombs.
        step: the metrics namespace and the step named in error rows.

    Returns:
        Outputs `records` (decoded) and `errors` (why a file is not an image).
    """

    settings: DecodeSettings = DecodeSettings()
    step: str = StepName.DECODE

    def __post_init__(self) -> None:
        super().__init__()

    def expand(self, records):
        return records | ApplyToEachImage(
            self.step,
            _DecodeFunction(self.settings.max_pixels),
            drop_failed=True,
            needs_pixels=False,
        )


def _build(context: StepContext) -> DecodeImages:
    return DecodeImages(context.settings_for(DecodeSettings))


STEP = Step(
    name=StepName.DECODE,
    version=STEP_VERSION,
    build=_build,
    settings=DecodeSettings,
    description="decode once: EXIF orientation, 8-bit RGB, pixel limit",
    parameters=lambda context: dataclasses.asdict(context.settings_for(DecodeSettings)),
    hands_on=True,  # the pixels every pixel step reads
)
