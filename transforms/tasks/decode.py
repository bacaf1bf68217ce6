"""The `decode` step: untrusted image bytes to oriented 8-bit RGB pixels, once per
image, or a clear error."""

from __future__ import annotations

import dataclasses
import io
import math
import re
import warnings

import apache_beam as beam
import numpy as np
from PIL import ExifTags, Image, ImageOps

from transforms.per_image import ApplyToEachImage, Outcome
from transforms.records import ImageRecord, StepName
from transforms.settings import setting
from transforms.tasks.base import Step, StepContext

STEP_VERSION = "2"  # 2: large images shrunk on load; JPEG scans limited

DEFAULT_MAX_PIXELS = 100_000_000
# No step needs more to find a face, a line of text or a label; a 10000x10000 photo
# would otherwise take gigabytes in every worker it passes through.
DEFAULT_WORKING_PIXELS = 24_000_000
MIN_WORKING_PIXELS = 10_000
# Pillow refuses anything above twice its MAX_IMAGE_PIXELS before we can look.
HARD_MAX_PIXELS = 2 * Image.MAX_IMAGE_PIXELS

# A Huffman-coded JPEG spends at least one bit on each 8x8 block of each scan: 512
# pixels per byte at the very most. Fewer bytes than a JPEG's header implies at 4096
# pixels per byte means data is missing, which libjpeg would fill with grey.
JPEG_MAX_PIXELS_PER_BYTE = 4096

# Each scan of a progressive JPEG costs a pass over the whole image: a few bytes
# repeating a scan thousands of times stall a worker for minutes. Encoders write
# about ten; libjpeg-turbo's own tools suggest limiting fuzzed input to 100-500.
MAX_JPEG_SCANS = 100
# A marker after entropy-coded data: 0xFF followed by neither a stuffed zero, a
# restart marker nor another (fill) 0xFF. One byte of context, so the search is linear.
_NEXT_MARKER = re.compile(rb"\xff[^\x00\xd0-\xd7\xff]")
_STANDALONE_MARKERS = frozenset((0x01, *range(0xD0, 0xD9)))

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


class ScanLimitError(DecodeError):
    """A progressive JPEG with more scans than any encoder writes: a likely scan bomb."""


@dataclasses.dataclass(frozen=True)
class DecodedImage:
    image: Image.Image  # RGB, EXIF orientation applied, shrunk to the working size
    format: str
    mode: str  # the file's own colour mode, before normalisation
    frames: int
    width: int  # the file's own size, EXIF orientation applied
    height: int

    @property
    def scale(self) -> float:
        """The file's pixels per pixel of `image` (1.0 unless shrunk on load)."""
        return max(self.width, self.height) / max(self.image.size)


def jpeg_scan_count(data: bytes) -> int:
    """The number of scans (SOS segments) of a JPEG's first image.

    Walks the segments by their lengths, so scans inside metadata (an EXIF
    thumbnail) or of later images (MPO) are not counted.
    """
    scans, position = 0, 2  # after SOI
    while position + 4 <= len(data):
        if data[position] != 0xFF:
            # Junk between segments: libjpeg skips to the next 0xFF, and so does this.
            position = data.find(b"\xff", position)
            if position == -1:
                return scans
            continue
        marker = data[position + 1]
        if marker == 0xFF:  # fill byte
            position += 1
            continue
        if marker == 0x00:  # not a marker: skipped by libjpeg too
            position += 2
            continue
        if marker == 0xD9:  # EOI
            return scans
        if marker in _STANDALONE_MARKERS:
            position += 2
            continue
        position += 2 + int.from_bytes(data[position + 2 : position + 4], "big")
        if marker == 0xDA:  # SOS: entropy-coded data follows up to the next marker
            scans += 1
            found = _NEXT_MARKER.search(data, position)
            if found is None:
                return scans
            position = found.end() - 2
    return scans


def working_size(width: int, height: int, working_pixels: int) -> tuple[int, int]:
    """The largest size of the same shape within `working_pixels` (never enlarged)."""
    if width * height <= working_pixels:
        return width, height
    factor = math.sqrt(working_pixels / (width * height))
    return max(1, int(width * factor)), max(1, int(height * factor))


def heif_available() -> bool:
    """Registers the HEIF (HEIC) opener if `pillow-heif` is installed."""
    try:
        import pillow_heif
    except ImportError:
        return False
    pillow_heif.register_heif_opener()
    return True


def decode_image(
    data: bytes,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    allow_heif: bool = False,
    working_pixels: int = DEFAULT_WORKING_PIXELS,
) -> DecodedImage:
    """Decodes image bytes into an oriented RGB image.

    Args:
        data: the file's bytes, untrusted.
        max_pixels: refuse images with more pixels than this (checked from the
            header, before any pixel is decoded).
        allow_heif: also accept HEIF/HEIC (needs `heif_available()` first).
        working_pixels: shrink larger images to at most this many pixels, a JPEG
            while it decodes (at 1/2, 1/4 or 1/8 scale), so it never takes the
            memory of its full size.

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
        if image.format in ("JPEG", "MPO"):
            _check_jpeg(data, image)
        file_format = image.format or "UNKNOWN"
        frames = getattr(image, "n_frames", 1)
        original_mode = image.mode
        width, height = _oriented_size(image)
        try:
            image.seek(0)
            if pixels > working_pixels and image.format in ("JPEG", "MPO"):
                # libjpeg scales by 1/2, 1/4 or 1/8 as it decodes, to at least the size
                # asked for: less memory and time, and no fewer pixels than the budget.
                image.draft(image.mode, working_size(*image.size, working_pixels))
            image.load()
            rgb = _shrink_to(to_rgb(ImageOps.exif_transpose(image)), working_pixels)
        except (OSError, SyntaxError, ValueError, EOFError) as error:
            raise TruncatedImageError(f"{file_format} pixel data is corrupt: {error}") from error
    return DecodedImage(rgb, file_format, original_mode, frames, width, height)


def _check_jpeg(data: bytes, image: Image.Image) -> None:
    pixels = image.width * image.height
    if len(data) * JPEG_MAX_PIXELS_PER_BYTE < pixels:
        # libjpeg fills what the data does not cover with grey and only warns.
        raise TruncatedImageError(
            f"{len(data):,} bytes cannot hold a {image.width}x{image.height} JPEG: "
            "the file is cut short or its header lies"
        )
    scans = jpeg_scan_count(data)
    if scans > MAX_JPEG_SCANS:
        raise ScanLimitError(
            f"{scans:,} scans exceed the limit of {MAX_JPEG_SCANS} for a progressive JPEG "
            "(possible scan bomb)"
        )


def _oriented_size(image: Image.Image) -> tuple[int, int]:
    """The image's size once its EXIF orientation is applied."""
    turned = image.getexif().get(ExifTags.Base.Orientation) in (5, 6, 7, 8)
    return (image.height, image.width) if turned else (image.width, image.height)


def _shrink_to(image: Image.Image, working_pixels: int) -> Image.Image:
    """The RGB image resized to fit `working_pixels`, if it is larger."""
    size = working_size(image.width, image.height, working_pixels)
    if size == image.size:
        return image
    return image.resize(size, Image.Resampling.LANCZOS, reducing_gap=3.0)


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
    working_pixels: int = setting(
        DEFAULT_WORKING_PIXELS,
        "shrink larger images as they load so that every step sees at most this many "
        "pixels; boxes and sizes stay in the file's own pixels",
        flag="--working-pixels",
    )

    def __post_init__(self) -> None:
        if not 1 <= self.max_pixels <= HARD_MAX_PIXELS:
            raise ValueError(
                f"--max-pixels must be between 1 and {HARD_MAX_PIXELS:,}, got {self.max_pixels}"
            )
        if self.working_pixels < MIN_WORKING_PIXELS:
            raise ValueError(
                f"--working-pixels must be at least {MIN_WORKING_PIXELS:,}, "
                f"got {self.working_pixels}"
            )


def decode_record(
    record: ImageRecord, settings: DecodeSettings, allow_heif: bool
) -> tuple[ImageRecord, Outcome]:
    """Decodes a record's bytes; the bytes are dropped once the pixels exist."""
    decoded = decode_image(
        record.data or b"",
        max_pixels=settings.max_pixels,
        allow_heif=allow_heif,
        working_pixels=settings.working_pixels,
    )
    fields = {
        "width": decoded.width,
        "height": decoded.height,
        "format": decoded.format,
        "mode": decoded.mode,
        "frames": decoded.frames,
    }
    updated = dataclasses.replace(
        record, data=None, image=decoded.image, scale=decoded.scale, **fields
    )
    result = {"step_version": STEP_VERSION, **fields, "scale": decoded.scale}
    return updated.with_result(StepName.DECODE, result), Outcome.PROCESSED


class _DecodeFunction:
    """Picklable per-image callable that registers the HEIF opener on first use."""

    def __init__(self, settings: DecodeSettings) -> None:
        self._settings = settings
        self._allow_heif: bool | None = None

    def __call__(self, record: ImageRecord) -> tuple[ImageRecord, Outcome]:
        if self._allow_heif is None:
            self._allow_heif = heif_available()
        return decode_record(record, self._settings, self._allow_heif)


@dataclasses.dataclass(eq=False)
class DecodeImages(beam.PTransform):
    """Decodes every image once; undecodable files go to `errors` and stop there.

    Args:
        settings: the pixel limit above which images are refused as likely
            decompression bombs, and the working size larger ones shrink to.
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
            _DecodeFunction(self.settings),
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
