"""The user's image files: reading PNG/JPEG images and masks into tensors, writing PNGs.

Images become ``(C, H, W)`` float32 tensors in [0, 1] with ``C = 1`` (grayscale) or ``C = 3``
(RGB); a folder becomes ``(N, C, H, W)``, its files (``.png``, ``.jpg``, ``.jpeg``) in name
order, all of one size and channel count. A mask is a grayscale image ``(H, W)``: white (>= 0.5)
marks a visible pixel (1), black a hidden one (0).

Every problem is an :class:`ImageError` whose message names the file: missing, unreadable,
not an image, truncated, of another size or channel count than asked for. Nothing here writes
but :func:`write_png`.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import torch

SUFFIXES = (".png", ".jpg", ".jpeg")


class ImageError(ValueError):
    """An image, folder or mask file that cannot be used; the message names it."""


def _open(path: Path):
    """The decoded PIL image at ``path`` (fully loaded, so a truncated file fails here)."""
    from PIL import Image, UnidentifiedImageError

    if not path.exists():
        raise ImageError(f"{path}: no such file")
    if not path.is_file():
        raise ImageError(f"{path}: not a file")
    try:
        with Image.open(path) as im:
            im.load()
            return im.copy()
    except UnidentifiedImageError:
        raise ImageError(f"{path}: not a PNG or JPEG image (or a corrupt one)") from None
    except (OSError, ValueError, SyntaxError) as err:
        raise ImageError(f"{path}: unreadable or corrupt image ({err})") from None


def _opaque(path: Path, im, mode: str):
    """Drop an alpha channel that hides nothing; refuse one that does."""
    alpha = np.asarray(im.getchannel("A"))
    if alpha.min() < 255:
        raise ImageError(f"{path}: has transparent pixels; save it as grayscale or RGB without transparency")
    return im.convert(mode)


def read_image(path: str | Path) -> torch.Tensor:
    """A grayscale or RGB image file -> ``(C, H, W)`` float32 in [0, 1], ``C`` 1 or 3.

    Palette images become RGB; an alpha channel is dropped when fully opaque.
    """
    path = Path(path)
    im = _open(path)
    if im.mode in ("1", "L"):
        im = im.convert("L")
    elif im.mode == "I;16":
        return torch.from_numpy(np.asarray(im, dtype=np.float32) / 65535.0)[None]
    elif im.mode == "LA":
        im = _opaque(path, im, "L")
    elif im.mode == "RGBA" or (im.mode == "P" and "transparency" in im.info):
        im = _opaque(path, im.convert("RGBA"), "RGB")
    elif im.mode in ("RGB", "P", "CMYK", "YCbCr"):
        im = im.convert("RGB")
    else:
        raise ImageError(f"{path}: image mode {im.mode!r} is neither grayscale nor RGB")
    arr = np.asarray(im, dtype=np.float32) / 255.0
    t = torch.from_numpy(arr.copy())
    return t[None] if t.dim() == 2 else t.permute(2, 0, 1).contiguous()


def image_files(folder: str | Path) -> list[Path]:
    """The PNG/JPEG files directly in ``folder``, in name order (at least one)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ImageError(f"{folder}: no such folder")
    files = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in SUFFIXES)
    if not files:
        raise ImageError(f"{folder}: holds no {'/'.join(s[1:] for s in SUFFIXES)} file")
    return files


def read_images(path: str | Path) -> tuple[torch.Tensor, list[str]]:
    """One image file or a folder of them -> ``(N, C, H, W)`` float32 and the file names.

    Raises:
        ImageError: naming the first file that is unreadable or differs in size or channels
            from the first one.
    """
    path = Path(path)
    files = image_files(path) if path.is_dir() else [path]
    first = read_image(files[0])
    out = [first]
    for f in files[1:]:
        img = read_image(f)
        if img.shape != first.shape:
            raise ImageError(f"{f}: is {describe(img.shape)} but {files[0].name} is {describe(first.shape)}; "
                             "every image of a folder must have one size and channel count")
        out.append(img)
    return torch.stack(out), [f.name for f in files]


def describe(shape) -> str:
    """``(C, H, W)`` -> e.g. ``"28x28 grayscale"`` / ``"32x32 RGB"``."""
    c, h, w = tuple(shape)[-3:]
    kind = {1: "grayscale", 3: "RGB"}.get(int(c), f"{c}-channel")
    return f"{w}x{h} {kind}"


def check_shape(images: torch.Tensor, shape: tuple[int, int, int], what: str) -> None:
    """Raise :class:`ImageError` unless ``images`` ``(N, C, H, W)`` are of ``shape`` ``(C, H, W)``."""
    if tuple(images.shape[1:]) != tuple(shape):
        raise ImageError(f"{what} is {describe(images.shape)} but the model takes {describe(shape)} images")


def read_mask(path: str | Path, size: tuple[int, int]) -> torch.Tensor:
    """A mask image -> ``(H, W)`` float32, 1 where visible (white), 0 where hidden (black).

    Raises:
        ImageError: the file is unusable, is not ``size`` ``(H, W)``, hides every pixel (nothing
            constrains the search) or hides none (nothing to inpaint).
    """
    path = Path(path)
    arr = np.asarray(_open(path).convert("L"), dtype=np.float32) / 255.0
    if arr.shape != tuple(size):
        raise ImageError(f"{path}: mask is {arr.shape[1]}x{arr.shape[0]} but the images are {size[1]}x{size[0]}")
    mask = torch.from_numpy((arr >= 0.5).astype(np.float32))
    if not bool(mask.any()):
        raise ImageError(f"{path}: the mask hides every pixel (white marks the visible ones): nothing to match")
    if bool(mask.all()):
        raise ImageError(f"{path}: the mask hides no pixel (black marks the hidden ones): nothing to inpaint; "
                         "use --task reconstruct")
    return mask


def to_uint8(image: torch.Tensor) -> np.ndarray:
    """``(C, H, W)`` in [0, 1] -> ``(H, W)`` or ``(H, W, 3)`` uint8."""
    arr = (image.detach().cpu().clamp(0, 1) * 255).round().to(torch.uint8)
    return arr[0].numpy() if arr.shape[0] == 1 else arr.permute(1, 2, 0).numpy()


def write_png(path: str | Path, image: torch.Tensor) -> None:
    """Write ``(C, H, W)`` in [0, 1] (C 1 or 3) as an 8-bit PNG."""
    from PIL import Image

    Image.fromarray(to_uint8(image)).save(Path(path), format="PNG")


def digest(images: torch.Tensor) -> str:
    """sha256 of the images' bytes: what identifies a folder's contents in a model's config."""
    return hashlib.sha256(images.contiguous().numpy().tobytes()).hexdigest()
