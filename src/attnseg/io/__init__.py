"""Image and label-map input and output: `images` (the one reader), `palettes` (colours, label PNGs, overlays),
`files` (the one atomic writer) and `errors` (one-line messages). Everything is importable from here."""
from .errors import first_line
from .files import (STOP_ERRNOS, WriteFailed, atomic_save, atomic_write, atomic_write_bytes, atomic_write_text,
                    encode_image, remove_stale_temps)
from .images import (DEFAULT_MAX_PIXELS, IMAGE_EXTENSIONS, ImageNote, ImageReadError, ImageTooLarge, decode_bytes,
                     fetch, is_url, open_image, peek_image, pil_to_rgb, read_image, read_label, to_rgb_array)
from .palettes import MAX_LABELS, default_palette, extend_palette, label_palette, label_png, overlay

__all__ = ["DEFAULT_MAX_PIXELS", "IMAGE_EXTENSIONS", "MAX_LABELS", "STOP_ERRNOS", "ImageNote", "ImageReadError",
           "ImageTooLarge", "WriteFailed", "atomic_save", "atomic_write", "atomic_write_bytes", "atomic_write_text",
           "decode_bytes", "default_palette", "encode_image", "extend_palette", "fetch", "first_line", "is_url", "label_palette",
           "label_png", "open_image", "overlay", "peek_image", "pil_to_rgb", "read_image", "read_label", "remove_stale_temps",
           "to_rgb_array"]
