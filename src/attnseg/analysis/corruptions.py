"""The 16 image corruptions of the Cityscapes-C / ImageNet-C protocol (Hendrycks & Dietterich, ICLR 2019),
as packaged in `imagecorruptions` 1.1 (bethgelab), written here: that package's last release breaks on current
NumPy / scikit-image. Same formulas and severity constants; the scikit-image parts (gaussian filter, s&p noise,
HSV conversion) re-implemented with NumPy / SciPy, the OpenCV primitives (disk blur, Canny, distance
transform, resizing) taken from `opencv-python-headless` (the `robustness` extra).

Groups: blur (motion, defocus, glass, gaussian), noise (gaussian, impulse, shot, speckle), digital (brightness,
contrast, saturate, jpeg), weather (snow, spatter, fog, frost). Severities 1-5; the Cityscapes-C protocol
(Michaelis et al. 2019, as SegFormer Sec. 4.4 uses it) runs the noise group at severities 1-3 only.

Every function takes an RGB uint8 image (H, W, 3) of any size, a severity and a `np.random.RandomState`
(all randomness comes from it, so a fixed seed repeats exactly), and returns uint8 (H, W, 3). Frost needs
texture images: six are generated procedurally (`frost_textures`), nothing is downloaded.
"""
from __future__ import annotations

import io
import math
from functools import lru_cache

import numpy as np
from PIL import Image

GROUPS = {"blur": ["motion_blur", "defocus_blur", "glass_blur", "gaussian_blur"],
          "noise": ["gaussian_noise", "impulse_noise", "shot_noise", "speckle_noise"],
          "digital": ["brightness", "contrast", "saturate", "jpeg_compression"],
          "weather": ["snow", "spatter", "fog", "frost"]}
CORRUPTIONS = [c for g in GROUPS.values() for c in g]
PROTOCOL_SEVERITIES = {c: ([1, 2, 3] if c in GROUPS["noise"] else [1, 2, 3, 4, 5]) for c in CORRUPTIONS}


def _cv2():
    try:
        import cv2
    except ImportError:
        raise ImportError("the corruptions need OpenCV: pip install 'attnseg[robustness]'") from None
    return cv2


# -- helpers (scikit-image's behaviour, re-implemented) ---------------------------------------------------

def sk_gaussian(x: np.ndarray, sigma: float) -> np.ndarray:
    """skimage.filters.gaussian on a float image: per channel, mode 'nearest', truncate 4."""
    from scipy.ndimage import gaussian_filter

    x = np.asarray(x, dtype=np.float64)
    s = (sigma, sigma, 0) if x.ndim == 3 else sigma
    return gaussian_filter(x, s, mode="nearest", truncate=4.0)


def rgb2hsv(rgb: np.ndarray) -> np.ndarray:
    """skimage.color.rgb2hsv for floats in [0, 1]."""
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    v = rgb.max(-1)
    delta = v - rgb.min(-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        s = np.where(v == 0, 0.0, delta / v)
        h = np.where(r == v, (g - b) / delta, np.where(g == v, 2.0 + (b - r) / delta, 4.0 + (r - g) / delta))
    h = np.where(delta == 0, 0.0, (h / 6.0) % 1.0)
    return np.stack([h, s, v], -1)


def hsv2rgb(hsv: np.ndarray) -> np.ndarray:
    """skimage.color.hsv2rgb."""
    h, s, v = hsv[..., 0], hsv[..., 1], hsv[..., 2]
    hi = np.floor(h * 6) % 6
    f = h * 6 - np.floor(h * 6)
    p, q, t = v * (1 - s), v * (1 - f * s), v * (1 - (1 - f) * s)
    choices = [np.stack(c, -1) for c in ((v, t, p), (q, v, p), (p, v, t), (p, q, v), (t, p, v), (v, p, q))]
    out = np.zeros_like(hsv)
    for i, c in enumerate(choices):
        out[hi == i] = c[hi == i]
    return out


def clipped_zoom(img: np.ndarray, factor: float) -> np.ndarray:
    from scipy.ndimage import zoom

    ch0 = int(np.ceil(img.shape[0] / float(factor)))
    top0 = (img.shape[0] - ch0) // 2
    ch1 = int(np.ceil(img.shape[1] / float(factor)))
    top1 = (img.shape[1] - ch1) // 2
    return zoom(img[top0:top0 + ch0, top1:top1 + ch1], (factor, factor, 1), order=1)


def plasma_fractal(rs: np.random.RandomState, mapsize: int = 256, wibbledecay: float = 3) -> np.ndarray:
    """Diamond-square height map in [0, 1] (side `mapsize`, a power of two)."""
    assert mapsize & (mapsize - 1) == 0
    a = np.empty((mapsize, mapsize), dtype=np.float64)
    a[0, 0] = 0
    step, wibble = mapsize, 100.0

    def wibbled(arr):
        return arr / 4 + wibble * rs.uniform(-wibble, wibble, arr.shape)

    while step >= 2:
        corner = a[0:mapsize:step, 0:mapsize:step]
        sq = corner + np.roll(corner, -1, 0)
        sq += np.roll(sq, -1, 1)
        a[step // 2:mapsize:step, step // 2:mapsize:step] = wibbled(sq)
        dr = a[step // 2:mapsize:step, step // 2:mapsize:step]
        ul = a[0:mapsize:step, 0:mapsize:step]
        a[0:mapsize:step, step // 2:mapsize:step] = wibbled(dr + np.roll(dr, 1, 0) + ul + np.roll(ul, -1, 1))
        a[step // 2:mapsize:step, 0:mapsize:step] = wibbled(dr + np.roll(dr, 1, 1) + ul + np.roll(ul, -1, 0))
        step //= 2
        wibble /= wibbledecay
    a -= a.min()
    return a / a.max()


def _shift(image: np.ndarray, dx: int, dy: int) -> np.ndarray:
    """Translate, repeating the edge row/column into the uncovered border."""
    if dx < 0:
        s = np.roll(image, image.shape[1] + dx, axis=1)
        s[:, dx:] = s[:, dx - 1:dx]
    elif dx > 0:
        s = np.roll(image, dx, axis=1)
        s[:, :dx] = s[:, dx:dx + 1]
    else:
        s = image
    if dy < 0:
        s = np.roll(s, image.shape[0] + dy, axis=0)
        s[dy:, :] = s[dy - 1:dy, :]
    elif dy > 0:
        s = np.roll(s, dy, axis=0)
        s[:dy, :] = s[dy:dy + 1, :]
    return s


def _motion_blur(x: np.ndarray, radius: int, sigma: float, angle: float) -> np.ndarray:
    """Sum of shifted copies along `angle`, weighted by a one-sided Gaussian of width 2 radius + 1."""
    width = radius * 2 + 1
    k = np.exp(-np.arange(width) ** 2 / (2 * sigma ** 2)) / (np.sqrt(2 * np.pi) * sigma)
    k /= k.sum()
    point = (width * np.sin(np.deg2rad(angle)), width * np.cos(np.deg2rad(angle)))
    hyp = math.hypot(*point)
    out = np.zeros_like(x, dtype=np.float32)
    for i in range(width):
        dy = -math.ceil(((i * point[0]) / hyp) - 0.5)
        dx = -math.ceil(((i * point[1]) / hyp) - 0.5)
        if abs(dy) >= x.shape[0] or abs(dx) >= x.shape[1]:
            break
        out = out + k[i] * _shift(x, dx, dy)
    return out


def disk(radius: float, alias_blur: float) -> np.ndarray:
    cv2 = _cv2()
    L, ksize = (np.arange(-8, 9), (3, 3)) if radius <= 8 else (np.arange(-radius, radius + 1), (5, 5))
    X, Y = np.meshgrid(L, L)
    d = np.array((X ** 2 + Y ** 2) <= radius ** 2, dtype=np.float32)
    d /= d.sum()
    return cv2.GaussianBlur(d, ksize=ksize, sigmaX=alias_blur)


@lru_cache(maxsize=1)
def frost_textures(size: int = 512) -> tuple[np.ndarray, ...]:
    """Six procedural frost textures (BGR uint8, like the package's files read by cv2.imread): crystal
    needles (short bright line segments at random angles, blurred) over a cold, cloudy ground."""
    cv2 = _cv2()
    out = []
    for seed in range(6):
        rs = np.random.RandomState(1000 + seed)
        layer = np.zeros((size, size), np.float32)
        for _ in range(900 + 300 * seed):
            y, x = rs.randint(0, size, 2)
            length, angle = rs.uniform(4, 40), rs.uniform(0, np.pi)
            y2, x2 = int(y + length * np.sin(angle)), int(x + length * np.cos(angle))
            cv2.line(layer, (int(x), int(y)), (x2, y2), float(rs.uniform(0.3, 1.0)), 1, cv2.LINE_AA)
        layer = cv2.GaussianBlur(layer, (0, 0), 0.8) + 0.6 * cv2.GaussianBlur(layer, (0, 0), 6)
        cloud = plasma_fractal(rs, size, 2.0)
        v = np.clip(0.55 * layer / max(layer.max(), 1e-6) + 0.35 * cloud, 0, 1)
        bgr = np.stack([v * 255, v * 235, v * 215], -1)  # bluish white, in OpenCV's BGR order
        out.append(np.clip(bgr, 0, 255).astype(np.uint8))
    return tuple(out)


# -- the corruptions (x: float RGB in 0..255 unless noted; each returns 0..255) ----------------------------

def gaussian_noise(x, s, rs):
    c = [.08, .12, 0.18, 0.26, 0.38][s - 1]
    x = x / 255.
    return np.clip(x + rs.normal(size=x.shape, scale=c), 0, 1) * 255


def shot_noise(x, s, rs):
    c = [60, 25, 12, 5, 3][s - 1]
    x = x / 255.
    return np.clip(rs.poisson(x * c) / float(c), 0, 1) * 255


def impulse_noise(x, s, rs):
    """skimage.util.random_noise(mode='s&p', amount=c): a fraction c of the values set to 0 or 1, half each."""
    c = [.03, .06, .09, 0.17, 0.27][s - 1]
    x = x / 255.
    flipped = rs.random_sample(x.shape) <= c
    salted = rs.random_sample(x.shape) <= 0.5
    out = x.copy()
    out[flipped & salted] = 1.0
    out[flipped & ~salted] = 0.0
    return np.clip(out, 0, 1) * 255


def speckle_noise(x, s, rs):
    c = [.15, .2, 0.35, 0.45, 0.6][s - 1]
    x = x / 255.
    return np.clip(x + x * rs.normal(size=x.shape, scale=c), 0, 1) * 255


def gaussian_blur(x, s, rs):
    c = [1, 2, 3, 4, 6][s - 1]
    return np.clip(sk_gaussian(x / 255., c), 0, 1) * 255


def glass_blur(x, s, rs):
    c = [(0.7, 1, 2), (0.9, 2, 1), (1, 2, 3), (1.1, 3, 2), (1.5, 4, 2)][s - 1]
    x = np.uint8(sk_gaussian(x / 255., c[0]) * 255)
    H, W = x.shape[:2]
    # "Locally shuffle pixels", bottom-right to top-left: the formula writes the swap
    # `x[h, w], x[h', w'] = x[h', w'], x[h, w]` on a (H, W, 3) array, whose right-hand sides are views, so the
    # pixel at (h', w') is copied to (h, w) and (h', w') keeps its value (NumPy and numba alike); each copy sees
    # the earlier ones. Run in that order on whole pixels packed into one int each (a Python list is ~50x
    # faster than indexing the array pixel by pixel).
    flat = (x[..., 0].astype(np.int64) << 16 | x[..., 1].astype(np.int64) << 8 | x[..., 2]).ravel().tolist()
    hs = np.arange(H - c[1], c[1], -1)
    ws = np.arange(W - c[1], c[1], -1)
    here = (hs[:, None] * W + ws[None, :]).ravel()
    for _ in range(c[2]):
        d = rs.randint(-c[1], c[1], size=(len(hs), len(ws), 2)).reshape(-1, 2)  # (dx, dy) per pixel, in order
        there = here + d[:, 1] * W + d[:, 0]
        for i, j in zip(here.tolist(), there.tolist()):
            flat[i] = flat[j]
    p = np.array(flat, dtype=np.int64).reshape(H, W)
    x = np.stack([p >> 16, (p >> 8) & 255, p & 255], -1).astype(np.uint8)
    return np.clip(sk_gaussian(x / 255., c[0]), 0, 1) * 255


def defocus_blur(x, s, rs):
    cv2 = _cv2()
    c = [(3, 0.1), (4, 0.5), (6, 0.5), (8, 0.5), (10, 0.5)][s - 1]
    x = x / 255.
    k = disk(c[0], c[1])
    out = np.stack([cv2.filter2D(x[:, :, d], -1, k) for d in range(3)], -1)
    return np.clip(out, 0, 1) * 255


def motion_blur(x, s, rs):
    c = [(10, 3), (15, 5), (15, 8), (15, 12), (20, 15)][s - 1]
    return np.clip(_motion_blur(x, c[0], c[1], rs.uniform(-45, 45)), 0, 255)


def brightness(x, s, rs):
    c = [.1, .2, .3, .4, .5][s - 1]
    hsv = rgb2hsv(x / 255.)
    hsv[..., 2] = np.clip(hsv[..., 2] + c, 0, 1)
    return np.clip(hsv2rgb(hsv), 0, 1) * 255


def contrast(x, s, rs):
    c = [0.4, .3, .2, .1, .05][s - 1]
    x = x / 255.
    means = x.mean(axis=(0, 1), keepdims=True)
    return np.clip((x - means) * c + means, 0, 1) * 255


def saturate(x, s, rs):
    c = [(0.3, 0), (0.1, 0), (2, 0), (5, 0.1), (20, 0.2)][s - 1]
    hsv = rgb2hsv(x / 255.)
    hsv[..., 1] = np.clip(hsv[..., 1] * c[0] + c[1], 0, 1)
    return np.clip(hsv2rgb(hsv), 0, 1) * 255


def jpeg_compression(x, s, rs):
    c = [25, 18, 15, 10, 7][s - 1]
    buf = io.BytesIO()
    Image.fromarray(np.uint8(x)).save(buf, "JPEG", quality=c)
    buf.seek(0)
    return np.asarray(Image.open(buf).convert("RGB")).astype(np.float64)


def fog(x, s, rs):
    c = [(1.5, 2), (2., 2), (2.5, 1.7), (2.5, 1.5), (3., 1.4)][s - 1]
    H, W = x.shape[:2]
    size = 1 if max(H, W, 3) == 0 else 2 ** (int(max(H, W, 3)) - 1).bit_length()
    x = x / 255.
    max_val = x.max()
    x = x + c[0] * plasma_fractal(rs, size, c[1])[:H, :W][..., None]
    return np.clip(x * max_val / (max_val + c[0]), 0, 1) * 255


def frost(x, s, rs):
    cv2 = _cv2()
    c = [(1, 0.4), (0.8, 0.6), (0.7, 0.7), (0.65, 0.7), (0.6, 0.75)][s - 1]
    tex = frost_textures()[rs.randint(6)]
    th, tw = tex.shape[:2]
    H, W = x.shape[:2]
    if th >= H and tw >= W:
        f = 1
    elif th < H and tw >= W:
        f = H / th
    elif th >= H and tw < W:
        f = W / tw
    else:
        f = max(H / th, W / tw)
    f *= 1.1
    tex = cv2.resize(tex, dsize=(int(np.ceil(tw * f)), int(np.ceil(th * f))), interpolation=cv2.INTER_CUBIC)
    y0, x0 = rs.randint(0, tex.shape[0] - H), rs.randint(0, tex.shape[1] - W)
    crop = tex[y0:y0 + H, x0:x0 + W][..., [2, 1, 0]]
    return np.clip(c[0] * x + c[1] * crop, 0, 255)


def snow(x, s, rs):
    cv2 = _cv2()
    c = [(0.1, 0.3, 3, 0.5, 10, 4, 0.8), (0.2, 0.3, 2, 0.5, 12, 4, 0.7), (0.55, 0.3, 4, 0.9, 12, 8, 0.7),
         (0.55, 0.3, 4.5, 0.85, 12, 8, 0.65), (0.55, 0.3, 2.5, 0.85, 12, 12, 0.55)][s - 1]
    x = np.asarray(x, dtype=np.float32) / 255.
    layer = rs.normal(size=x.shape[:2], loc=c[0], scale=c[1])
    layer = clipped_zoom(layer[..., None], c[2])
    layer[layer < c[3]] = 0
    layer = np.clip(layer.squeeze(), 0, 1)
    layer = _motion_blur(layer, c[4], c[5], rs.uniform(-135, -45))
    layer = (np.round(layer * 255).astype(np.uint8) / 255.)[..., None][:x.shape[0], :x.shape[1], :]
    gray = cv2.cvtColor(x, cv2.COLOR_RGB2GRAY).reshape(x.shape[0], x.shape[1], 1)
    x = c[6] * x + (1 - c[6]) * np.maximum(x, gray * 1.5 + 0.5)
    return np.clip(x + layer + np.rot90(layer, k=2), 0, 1) * 255


def spatter(x, s, rs):
    cv2 = _cv2()
    c = [(0.65, 0.3, 4, 0.69, 0.6, 0), (0.65, 0.3, 3, 0.68, 0.6, 0), (0.65, 0.3, 2, 0.68, 0.5, 0),
         (0.65, 0.3, 1, 0.65, 1.5, 1), (0.67, 0.4, 1, 0.65, 1.5, 1)][s - 1]
    rgb = np.asarray(x, dtype=np.float32) / 255.
    liquid = sk_gaussian(rs.normal(size=rgb.shape[:2], loc=c[0], scale=c[1]), c[2])
    liquid[liquid < c[3]] = 0
    if c[5] == 0:  # water drops: pale turquoise, shaded by the distance to the drops' edges
        liquid = (liquid * 255).astype(np.uint8)
        dist = 255 - cv2.Canny(liquid, 50, 150)
        dist = cv2.distanceTransform(dist, cv2.DIST_L2, 5)
        _, dist = cv2.threshold(dist, 20, 20, cv2.THRESH_TRUNC)
        dist = cv2.blur(dist, (3, 3)).astype(np.uint8)
        dist = cv2.equalizeHist(dist)
        dist = cv2.filter2D(dist, cv2.CV_8U, np.array([[-2, -1, 0], [-1, 1, 1], [0, 1, 2]]))
        dist = cv2.blur(dist, (3, 3)).astype(np.float32)
        m = cv2.cvtColor(liquid * dist, cv2.COLOR_GRAY2BGRA)
        m /= np.max(m, axis=(0, 1))
        m *= c[4]
        ones = np.ones_like(m[..., :1])
        color = cv2.cvtColor(np.concatenate((175 / 255. * ones, 238 / 255. * ones, 238 / 255. * ones), axis=2),
                             cv2.COLOR_BGR2BGRA)
        # the formula treats the RGB image as BGR here; kept so the colour matches the protocol's
        return cv2.cvtColor(np.clip(cv2.cvtColor(rgb, cv2.COLOR_BGR2BGRA) + m * color, 0, 1), cv2.COLOR_BGRA2BGR) * 255
    m = sk_gaussian(np.where(liquid > c[3], 1, 0).astype(np.float32), c[4])  # mud: brown blots
    m[m < 0.8] = 0
    ones = np.ones_like(rgb[..., :1])
    color = np.concatenate((63 / 255. * ones, 42 / 255. * ones, 20 / 255. * ones), axis=2) * m[..., None]
    return np.clip(rgb * (1 - m[..., None]) + color, 0, 1) * 255


FUNCTIONS = {name: globals()[name] for name in CORRUPTIONS}


def corrupt(image: np.ndarray, name: str, severity: int, seed: int = 0) -> np.ndarray:
    """`name` at `severity` (1..5) on an RGB uint8 image; deterministic for a given seed."""
    if name not in FUNCTIONS:
        raise ValueError(f"unknown corruption {name!r}; choose from {', '.join(CORRUPTIONS)}")
    if not 1 <= int(severity) <= 5:
        raise ValueError(f"severity must be 1..5, got {severity}")
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"corrupt expects an RGB uint8 (H, W, 3) image, got {image.dtype} {image.shape}")
    rs = np.random.RandomState(seed % 2**32)
    out = FUNCTIONS[name](image.astype(np.float64), int(severity), rs)
    return np.uint8(np.clip(np.asarray(out), 0, 255))
