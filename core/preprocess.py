"""The preprocessing recipe a model's card and ONNX metadata document, in PIL and NumPy only
(no torch), so `compress predict` and `evaluate` start in a fraction of a second and do exactly
what an edge client following the card does:

  decode → apply the EXIF orientation (phone photos store it as a tag) → 8-bit RGB → resize the shorter side to `resize` (bilinear, aspect kept, the long side
  truncated: int(resize · long / short)) → centre crop `crop` (offsets int(round((side − crop) / 2)))
  → /255 → (x − mean) / std per channel → NCHW float32.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")
NOT_DATA_FOLDERS = ("__MACOSX",)  # a zip made on macOS: resource forks, never images


def is_data_name(name: str) -> bool:
    """A file or folder name that can hold data: not hidden (.DS_Store, macOS's `._x.jpg`
    AppleDouble twins of every file) and not a folder like __MACOSX."""
    return not name.startswith(".") and name not in NOT_DATA_FOLDERS


def is_image_file(path: Path, root: Path | None = None) -> bool:
    """An image file that is data: an image extension, and no hidden or __MACOSX part in its
    path below `root` (the data folder; the folders above it are the user's business)."""
    parts = path.relative_to(root).parts if root is not None else (path.name,)
    return path.suffix.lower() in IMAGE_EXTENSIONS and all(is_data_name(p) for p in parts) and path.is_file()


def upright(img: Image.Image) -> Image.Image:
    """The image as a viewer shows it: the EXIF orientation applied (a no-op without the tag)."""
    return ImageOps.exif_transpose(img) or img


def to_rgb(img: Image.Image) -> Image.Image:
    """Grayscale, RGBA, palette, CMYK and 16-bit images all become 8-bit RGB."""
    if img.mode == "RGB":
        return img
    if img.mode in ("P", "PA") and "transparency" in img.info:
        img = img.convert("RGBA")
    if img.mode.startswith("I;16") or img.mode == "I":
        arr = np.asarray(img, dtype=np.float64)
        img = Image.fromarray((arr / max(arr.max(), 1) * 255).astype(np.uint8))
    return img.convert("RGB")


def resize_shorter(img: Image.Image, size: int) -> Image.Image:
    """Resize so the shorter side is `size`, keeping the aspect ratio (torchvision's Resize(int))."""
    w, h = img.size
    if w <= h:
        new_w, new_h = size, int(size * h / w)
    else:
        new_w, new_h = int(size * w / h), size
    if (new_w, new_h) == (w, h):
        return img
    return img.resize((new_w, new_h), Image.Resampling.BILINEAR)


def crop_offsets(height: int, width: int, size: int) -> tuple[int, int]:
    """(top, left) of the centred `size` × `size` crop."""
    return int(round((height - size) / 2.0)), int(round((width - size) / 2.0))


def rgb_array(path: str | Path) -> np.ndarray:
    """An image file decoded in full as uint8 HWC RGB (what a client holds before preprocessing)."""
    with Image.open(path) as img:
        img.load()
        return np.asarray(to_rgb(upright(img)), dtype=np.uint8)


def preprocess_array(rgb: np.ndarray, resize: int, crop: int, mean, std) -> np.ndarray:
    """Decoded uint8 HWC RGB pixels as the network input [1, 3, crop, crop] float32."""
    resized = np.asarray(resize_shorter(Image.fromarray(rgb), resize), dtype=np.uint8).transpose(2, 0, 1)
    return normalize(center_crop(resized, crop)[None], mean, std)


def decode(path: str | Path, resize: int, draft: bool = False) -> np.ndarray:
    """An image file as uint8 CHW RGB with the shorter side = `resize`. `draft` lets libjpeg
    decode a JPEG at a reduced scale first (much faster on large photos, but not the documented
    recipe: compress uses it for training images only)."""
    with Image.open(path) as img:
        if draft and img.format == "JPEG":
            img.draft("RGB", (resize, resize))
        img.load()
        return np.ascontiguousarray(np.asarray(resize_shorter(to_rgb(upright(img)), resize),
                                               dtype=np.uint8).transpose(2, 0, 1))


def center_crop(chw: np.ndarray, size: int) -> np.ndarray:
    top, left = crop_offsets(chw.shape[1], chw.shape[2], size)
    return chw[:, top:top + size, left:left + size]


def normalize(batch_uint8: np.ndarray, mean, std) -> np.ndarray:
    """uint8 [N, 3, H, W] → float32 (x/255 − mean)/std."""
    m = np.asarray(mean, dtype=np.float32).reshape(1, 3, 1, 1)
    s = np.asarray(std, dtype=np.float32).reshape(1, 3, 1, 1)
    return (batch_uint8.astype(np.float32) / np.float32(255.0) - m) / s


def preprocess(path: str | Path, resize: int, crop: int, mean, std) -> np.ndarray:
    """One image file as the network input [1, 3, crop, crop] float32."""
    return preprocess_array(rgb_array(path), resize, crop, mean, std)
