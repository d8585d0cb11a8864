"""Pictures cleaned of what tells who took them, where and with what, and a private store for files by hash.

A phone's photo carries the place it was taken (EXIF GPS), the camera and its serial, the time, the editing
software and often the author's name (EXIF, XMP, IPTC, comments, PNG text chunks), sometimes a second picture
(an MPO depth map or gain map with its own EXIF) or a video appended after the end of the picture (motion
photos). Nothing of that is cut out piece by piece: the pixels are decoded and written anew into a file of the
same format that holds them and nothing else, so a kind of metadata nobody thought of is gone too.

Only JPEG, PNG, WebP and GIF are decoded, recognised by their content whatever their name or type claims. Any
other file goes on as it came and says so (`metadata_removed=False`), for the caller to decide what to do.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import os
import re
import struct
import tempfile
import threading
import time
import unicodedata
import warnings
from dataclasses import dataclass, field, replace
from pathlib import Path, PurePosixPath
from typing import Any

from PIL import ExifTags, Image, JpegImagePlugin, UnidentifiedImageError

from handlers.events import VIDEO, Media
from handlers.ports import MediaRefused  # a file that claims to be a picture but cannot be cleaned

# Phone cameras take 12 to 50 megapixels; a picture that decodes into more (all its frames together) is refused
# rather than let a few kilobytes of crafted file take gigabytes of memory. Pillow's own limit (89 million, an
# error from 179 million) is the process's; this one is ours and is checked on the header, before decoding.
MAX_PIXELS = 50_000_000
# Each frame is an object and an encoder call of its own, so a GIF of a million one-pixel frames is refused too.
MAX_FRAMES = 1000
# 90 is high enough that re-encoding a phone's photo (usually 85-95) adds no visible loss, and less than the
# 95+ where files grow for nothing the eye sees.
JPEG_QUALITY = 90
WEBP_QUALITY = 90

TOO_LARGE = "image too large"
DAMAGED = "image damaged or unreadable"

# Image.open tries only these: every other plugin stays out of reach of untrusted files (EPS would run
# Ghostscript). MPO (a JPEG with more pictures in it) opens through the JPEG plugin.
_FORMATS = ("JPEG", "PNG", "WEBP", "GIF")
_ANIMATED = frozenset({"PNG", "WEBP", "GIF"})
_OUTPUT = {"JPEG": ("image/jpeg", ".jpg"), "PNG": ("image/png", ".png"), "WEBP": ("image/webp", ".webp"),
           "GIF": ("image/gif", ".gif")}
# The first bytes of the formats we clean: a file that starts like one but that Pillow cannot open is refused,
# not passed on as a document with its EXIF (a JPEG cut off after its EXIF segment, before its frame header).
_SIGNATURES = (b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n", b"GIF87a", b"GIF89a")
_WEBP = re.compile(rb"RIFF....WEBP", re.DOTALL)
# What Pillow raises on damaged or hostile data, from its parsers as from its decoders.
_DAMAGED = (OSError, SyntaxError, ValueError, EOFError, IndexError, KeyError, TypeError, struct.error)
# Warning filters belong to the process (Python before 3.14 has no per-thread ones), and two cleans in threads
# entering and leaving catch_warnings out of order would leave one's filters in place for good.
_WARNING_FILTERS = threading.Lock()

# ImageOps.exif_transpose's table. It is not called: besides turning the picture it writes the EXIF anew without
# the orientation, and that raises (TypeError, AttributeError, struct.error) on some damaged EXIF blocks, for
# EXIF that is thrown away here anyway.
_TURNS = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}

_NAME_SEPARATORS = re.compile(r"[/\\]")
_NAME_RESERVED = re.compile(r'[<>:"|?*]')
_NAME_SPACES = re.compile(r"\s+")
NAME_STEM_LENGTH = 100
NAME_SUFFIX_LENGTH = 16


@dataclass(frozen=True)
class Cleaned:
    data: bytes
    mime_type: str
    kind: str  # "image", "video" or "document"
    file_name: str | None
    metadata_removed: bool
    width: int | None
    height: int | None


def clean(data: bytes, mime_type: str | None, file_name: str | None, *, max_pixels: int = MAX_PIXELS) -> Cleaned:
    """A picture re-encoded with nothing but its pixels (upright, ICC profile kept), anything else as it came.

    Raises MediaRefused for a picture too large or too damaged to decode."""
    cleaned = _reencode(data, max_pixels)
    if cleaned is None:
        return _as_it_came(data, mime_type, file_name)
    encoded, picture = cleaned
    output_type, extension = _OUTPUT[picture.format]
    width, height = picture.size
    return Cleaned(encoded, output_type, "image", _image_name(file_name, extension), True, width, height)


def _as_it_came(data: bytes, mime_type: str | None, file_name: str | None) -> Cleaned:
    # HEIC lands here: Pillow cannot open it without a plugin, so what it carries is not removed, and says so.
    kind = "video" if (mime_type or "").lower().startswith("video/") else "document"
    name = _safe_name(file_name)
    return Cleaned(data, mime_type or "application/octet-stream", kind, name, False, None, None)


@dataclass
class _Picture:
    format: str
    # Upright, still with the source's info; replaced one by one by their bare copies when encoded, so that a
    # frame and its copy are the only two in memory at once.
    frames: list[Image.Image]
    durations: list[float] = field(default_factory=list)
    loop: int | None = None
    icc_profile: bytes | None = None
    subsampling: int = -1
    lossless: bool = False

    @property
    def size(self) -> tuple[int, int]:
        return self.frames[0].size


def _reencode(data: bytes, max_pixels: int) -> tuple[bytes, _Picture] | None:
    with _WARNING_FILTERS, warnings.catch_warnings():
        # Pillow's warnings are about the sender's file (a malformed MPO, a broken EXIF), nothing to show the
        # operator; its warning of a decompression bomb is an error here.
        warnings.simplefilter("ignore")
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            picture = _decode(data, max_pixels)
            return None if picture is None else (_encode(picture), picture)
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
            raise MediaRefused(TOO_LARGE) from error
        except _DAMAGED as error:
            raise MediaRefused(DAMAGED) from error


def _decode(data: bytes, max_pixels: int) -> _Picture | None:
    try:
        source = Image.open(io.BytesIO(data), formats=_FORMATS)
    except UnidentifiedImageError:
        if data.startswith(_SIGNATURES) or _WEBP.match(data):
            raise MediaRefused(DAMAGED) from None
        return None
    with source:
        _check_pixels(source.size, max_pixels)
        picture = _Picture(
            format="JPEG" if isinstance(source, JpegImagePlugin.JpegImageFile) else str(source.format),
            frames=[],
            loop=source.info.get("loop"),  # read before seeking: later frames need not repeat it
            icc_profile=source.info.get("icc_profile") or None,
            subsampling=JpegImagePlugin.get_sampling(source),
            # A VP8L chunk is lossless WebP. These four bytes found by chance elsewhere only make a lossless
            # copy of a lossy picture: larger, never worse.
            lossless=source.format == "WEBP" and b"VP8L" in data,
        )
        if source.format in _ANIMATED and getattr(source, "is_animated", False):
            _read_animation(source, picture, max_pixels)
        else:
            # An MPO's further pictures (depth map, gain map, preview) are not part of what a reader sees.
            picture.frames.append(_upright(source))
        return picture


def _read_animation(source: Image.Image, picture: _Picture, max_pixels: int) -> None:
    """Every frame as the viewer shows it (Pillow composes each on the ones before), with its duration."""
    pixels = 0
    for index in range(MAX_FRAMES + 1):
        try:
            source.seek(index)
        except EOFError:
            return
        pixels += source.width * source.height  # a GIF's frame may enlarge the canvas
        if index == MAX_FRAMES or pixels > max_pixels:
            raise MediaRefused(TOO_LARGE)
        picture.frames.append(_upright(source))
        picture.durations.append(source.info.get("duration", 0))  # WebP knows it once the frame is loaded


def _check_pixels(size: tuple[int, int], max_pixels: int) -> None:
    width, height = size
    if width * height > max_pixels:
        raise MediaRefused(TOO_LARGE)


def _upright(image: Image.Image) -> Image.Image:
    """A new image, turned the way the EXIF (or XMP) orientation says the camera was held."""
    image.load()  # damaged pixels refuse the picture
    turn = _TURNS.get(_orientation(image))
    return image.copy() if turn is None else image.transpose(turn)


def _orientation(image: Image.Image) -> int:
    try:
        return int(image.getexif().get(ExifTags.Base.Orientation, 1))
    except Exception:  # whatever Pillow's parser raises on a damaged EXIF block, it only loses the orientation
        return 1


def _encode(picture: _Picture) -> bytes:
    converted = False
    for index, frame in enumerate(picture.frames):
        if picture.format == "JPEG" and frame.mode not in ("L", "RGB"):
            # CMYK (print files): messengers show RGB. Its profile describes CMYK and is dropped with it.
            frame, converted = frame.convert("RGB"), True
        picture.frames[index] = _pixels_only(frame)
    output = io.BytesIO()
    first = picture.frames[0]
    first.save(output, format=picture.format, **_options(picture, None if converted else picture.icc_profile))
    return output.getvalue()


def _pixels_only(image: Image.Image) -> Image.Image:
    """A copy with the pixels, the palette, and which colour is see-through: nothing a writer could be in.

    Savers take metadata from the image as well as from their arguments (Pillow's JPEG writer the comment,
    its GIF writer all of the info), so the copy has nothing else for them to find."""
    bare = image.copy()
    bare.info = {key: image.info[key] for key in ("transparency",) if key in image.info}
    return bare


def _options(picture: _Picture, icc_profile: bytes | None) -> dict[str, Any]:
    options: dict[str, Any] = {}
    # An ICC profile describes the colours of a screen or a camera model ("Display P3", "sRGB"), never a
    # person, and without it wide-gamut photos look washed out. GIF cannot carry one.
    if icc_profile and picture.format != "GIF":
        options["icc_profile"] = icc_profile
    if picture.format == "JPEG":
        # The source's chroma subsampling, so that re-encoding neither blurs the colour edges of a 4:4:4 JPEG
        # (screenshots, graphics) nor inflates a 4:2:0 photo with chroma it never had; 4:4:4 when unknown.
        subsampling = picture.subsampling if picture.subsampling in (0, 1, 2) else 0
        options |= {"quality": JPEG_QUALITY, "subsampling": subsampling, "optimize": True}
    elif picture.format == "WEBP":
        options |= {"lossless": True} if picture.lossless else {"quality": WEBP_QUALITY}
    if len(picture.frames) > 1:
        options |= _animation_options(picture)
    return options


def _animation_options(picture: _Picture) -> dict[str, Any]:
    """Every frame kept with its duration and the loop count (an animation that played once still does)."""
    options: dict[str, Any] = {"save_all": True, "append_images": picture.frames[1:], "duration": picture.durations}
    if picture.loop is not None:
        options["loop"] = picture.loop
    if any(frame.has_transparency_data for frame in picture.frames):  # (Pillow 10.1 and later)
        if picture.format == "GIF":
            # The frames are whole pictures: each must replace the last, or what the last showed stays visible
            # where this one is see-through.
            options["disposal"] = 2
        elif picture.format == "WEBP":
            # libwebp's animation encoder drops the alpha flag when the parts of frames it keeps happen to be
            # opaque (a transparent frame after an opaque one, say), and transparent areas then decode black;
            # whole frames keep it.
            options |= {"kmin": 0, "kmax": 1}
    return options


def _image_name(file_name: str | None, extension: str) -> str | None:
    """The sender's name for the picture, with the extension of its format (a JPEG named "scan.png" leaves as
    "scan.jpg", which is how a reader's system will know how to open it)."""
    name = _safe_name(file_name)
    if name is None:
        return None
    stem = PurePosixPath(name).stem.rstrip(" .")
    return f"{stem}{extension}" if stem else None


def _safe_name(file_name: str | None) -> str | None:
    """The last part of a name, readable and harmless: a Windows or Unix path would name the sender's account,
    and control or direction characters can disguise an extension (U+202E turns "gpj.exe" into "exe.jpg")."""
    if not file_name:
        return None
    name = unicodedata.normalize("NFC", _NAME_SEPARATORS.split(file_name)[-1])
    name = "".join(character for character in name if unicodedata.category(character)[0] != "C")
    name = _NAME_SPACES.sub(" ", _NAME_RESERVED.sub("_", name)).strip(" .")
    if not name:
        return None
    path = PurePosixPath(name)
    # A long "extension" is no extension: it is cut with the rest.
    stem, suffix = (path.stem, path.suffix) if len(path.suffix) <= NAME_SUFFIX_LENGTH else (name, "")
    return stem[:NAME_STEM_LENGTH].rstrip(" .") + suffix


_DIGEST = re.compile(r"[0-9a-f]{64}")


class MediaStore:
    """Files by the SHA-256 of their content, in a folder only the bot's user can enter.

    A letter keeps the digest; the same picture sent twice is stored once. Digests are checked before they are
    made into paths, so that a digest from anywhere (a database row, a button) cannot name a file outside."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def put(self, data: bytes) -> str:
        digest = hashlib.sha256(data).hexdigest()
        path = self.path(digest)
        if not path.exists():
            self._write(path, data)
        return digest

    def get(self, digest: str) -> bytes:
        """The file's bytes; FileNotFoundError when there is none."""
        return self.path(digest).read_bytes()

    def exists(self, digest: str) -> bool:
        return self.path(digest).is_file()

    def delete(self, digest: str) -> bool:
        try:
            self.path(digest).unlink()
        except FileNotFoundError:
            return False
        return True

    def digests(self) -> list[str]:
        """Every stored digest (for a sweep of the files no letter refers to any more); unfinished writes and
        anything else in the folder are not among them."""
        try:
            names = [entry.name for entry in os.scandir(self.folder) if entry.is_file(follow_symlinks=False)]
        except FileNotFoundError:
            return []
        return sorted(name for name in names if _DIGEST.fullmatch(name))

    def path(self, digest: str) -> Path:
        if not _DIGEST.fullmatch(digest):
            raise ValueError("not a media digest (64 lower-case hexadecimal characters)")
        return self.folder / digest

    def _write(self, path: Path, data: bytes) -> None:
        # Written under another name and renamed, so that a crash never leaves a file whose name promises
        # content it does not have; mkstemp creates it 0600 whatever the umask.
        self.folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        descriptor, temporary = tempfile.mkstemp(dir=self.folder, prefix=".", suffix=".tmp")
        try:
            with os.fdopen(descriptor, "wb") as file:
                file.write(data)
                file.flush()
                os.fsync(file.fileno())
            os.replace(temporary, path)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise
        self._sync_folder()

    def _sync_folder(self) -> None:
        # The rename is durable only once the folder is: a letter committed after put() must find its file.
        descriptor = os.open(self.folder, os.O_RDONLY)
        try:
            os.fsync(descriptor)
        finally:
            os.close(descriptor)


# A file younger than this may belong to a letter whose transaction is still open.
SPARE_SECONDS = 600.0


class Shelf:
    """The handlers' media shelf (handlers.ports.MediaShelf): clean, then keep by hash. Cleaning runs in a thread:
    re-encoding a 12-megapixel photo takes a few hundred milliseconds the event loop must not wait for."""

    def __init__(self, store: MediaStore) -> None:
        self.store = store

    async def keep(self, data: bytes, mime_type: str | None, file_name: str | None, kind: str) -> Media:
        cleaned = await asyncio.to_thread(clean, data, mime_type, file_name)
        if cleaned.kind == "document" and kind == VIDEO:
            cleaned = replace(cleaned, kind=VIDEO)  # the network knew it as a video (a file type we do not sniff)
        digest = await asyncio.to_thread(self.store.put, cleaned.data)
        return Media(digest, cleaned.kind, cleaned.mime_type, None, cleaned.metadata_removed, len(cleaned.data))

    def read(self, digest: str) -> bytes:
        return self.store.get(digest)

    def sweep(self, referenced: set[str]) -> int:
        swept = 0
        spare_after = time.time() - SPARE_SECONDS
        for digest in self.store.digests():
            if digest not in referenced and self.store.path(digest).stat().st_mtime < spare_after:
                swept += self.store.delete(digest)
        return swept
