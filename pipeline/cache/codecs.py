"""Feature codecs of the teacher cache: plain fp16, BitRound, and a PCA basis.

Teacher features dominate the cache (ScanNet: 50 images x 32x43 patches x 384 dims per scene),
so two lossy modes trade fidelity for bytes, and every mode reports the mean cosine between
the raw features and what a reader gets back, so the trade is measured, never assumed:

* ``"fp16"``: float16, lossless for fp16 input.
* ``"bitround<k>"``: keep ``k`` of float16's 10 mantissa bits (numcodecs ``BitRound``,
  Kloewer et al. 2021). The zeroed bits make zstd shrink the chunks; decoding is the identity.
* ``"pca<k>"``: store ``k`` coefficients per patch on a basis fitted on training scenes
  (:func:`fit_pca`, stored once at the cache root); readers reconstruct ``D`` dims.
* ``"pca<k>+bitround<b>"``: both.

BitRound is applied here, in memory, rather than as a zarr filter
(``zarr.codecs.numcodecs.BitRound``): its decode is the identity, so the bytes on disk are the
same, while the store keeps only codecs of the Zarr v3 specification (zarr warns on every open
of an array that names a numcodecs codec, and other Zarr readers may not know it).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

FP16_MANTISSA_BITS = 10
_CODEC_RE = re.compile(r"^(?:fp16|pca(?P<k>\d+)(?:\+bitround(?P<b1>\d+))?|bitround(?P<b2>\d+))$")


@dataclass(frozen=True)
class FeatureCodec:
    """A parsed ``feature_codec`` string; ``pca_k``/``keepbits`` are None when unused."""

    pca_k: int | None = None
    keepbits: int | None = None

    @property
    def name(self) -> str:
        parts = []
        if self.pca_k is not None:
            parts.append(f"pca{self.pca_k}")
        if self.keepbits is not None:
            parts.append(f"bitround{self.keepbits}")
        return "+".join(parts) or "fp16"

    @property
    def lossy(self) -> bool:
        return self.pca_k is not None or self.keepbits is not None

    def stored_dim(self, dim: int) -> int:
        """Channels on disk for features of ``dim`` channels."""
        return dim if self.pca_k is None else self.pca_k


def parse_codec(text: str) -> FeatureCodec:
    """``"fp16" | "bitround<k>" | "pca<k>" | "pca<k>+bitround<b>"`` -> FeatureCodec."""
    m = _CODEC_RE.match(text) if isinstance(text, str) else None
    if m is None:
        raise ValueError(
            f"unknown feature codec {text!r}; use 'fp16', 'bitround<k>' (k in 1..10), "
            "'pca<k>' or 'pca<k>+bitround<b>'"
        )
    k = None if m.group("k") is None else int(m.group("k"))
    bits = m.group("b1") or m.group("b2")
    b = None if bits is None else int(bits)
    if k is not None and k < 1:
        raise ValueError(f"feature codec {text!r}: the PCA dimension must be >= 1")
    if b is not None and not 1 <= b <= FP16_MANTISSA_BITS:
        raise ValueError(
            f"feature codec {text!r}: BitRound keeps 1..{FP16_MANTISSA_BITS} mantissa bits "
            "of float16"
        )
    return FeatureCodec(pca_k=k, keepbits=b)


@dataclass(frozen=True, eq=False)
class PcaBasis:
    """Mean ``f32[D]`` and orthonormal rows ``components f32[k, D]`` (largest variance first)."""

    mean: np.ndarray
    components: np.ndarray
    explained_variance_ratio: tuple[float, ...] = ()

    def __post_init__(self) -> None:
        mean = np.ascontiguousarray(self.mean, dtype=np.float32)
        comps = np.ascontiguousarray(self.components, dtype=np.float32)
        if mean.ndim != 1 or comps.ndim != 2 or comps.shape[1] != mean.shape[0]:
            raise ValueError(
                f"PCA basis needs mean [D] and components [k, D]; got {mean.shape} and "
                f"{comps.shape}"
            )
        if not (np.isfinite(mean).all() and np.isfinite(comps).all()):
            raise ValueError("PCA basis has non-finite values")
        object.__setattr__(self, "mean", mean)
        object.__setattr__(self, "components", comps)
        object.__setattr__(
            self, "explained_variance_ratio", tuple(float(x) for x in self.explained_variance_ratio)
        )

    @property
    def k(self) -> int:
        return int(self.components.shape[0])

    @property
    def dim(self) -> int:
        return int(self.mean.shape[0])

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, PcaBasis)
            and np.array_equal(self.mean, other.mean)
            and np.array_equal(self.components, other.components)
        )

    __hash__ = None  # type: ignore[assignment]

    def project(self, features: np.ndarray) -> np.ndarray:
        """``[..., D]`` -> float32 coefficients ``[..., k]``."""
        x = np.asarray(features, dtype=np.float32)
        flat = x.reshape(-1, self.dim) - self.mean  # 2-D GEMM: batched 3-D matmul is ~50x slower
        return (flat @ self.components.T).reshape(*x.shape[:-1], self.k)

    def reconstruct(self, coefficients: np.ndarray) -> np.ndarray:
        """``[..., k]`` -> float32 features ``[..., D]``."""
        c = np.asarray(coefficients, dtype=np.float32)
        flat = c.reshape(-1, self.k) @ self.components + self.mean
        return flat.reshape(*c.shape[:-1], self.dim)


def fit_pca(
    feature_samples: np.ndarray, k: int, *, max_samples: int = 200_000, seed: int = 0
) -> PcaBasis:
    """Fit a k-dim PCA basis on feature vectors ``[..., D]`` (e.g. a few training scenes).

    Subsamples to ``max_samples`` vectors (seeded) and solves the D x D covariance in float64,
    so fitting on ~10 scenes of ViT features takes about a second. Signs are fixed (largest
    entry of each component positive) so the same samples always give the same basis.
    """
    x = np.asarray(feature_samples)
    if x.ndim < 2:
        raise ValueError(f"fit_pca needs feature vectors [..., D]; got shape {x.shape}")
    x = x.reshape(-1, x.shape[-1])
    x = x[np.isfinite(x).all(axis=1)]
    dim = x.shape[1]
    if not 1 <= k <= dim:
        raise ValueError(f"fit_pca: k={k} must be in 1..{dim} (the feature dimension)")
    if x.shape[0] < 2:
        raise ValueError("fit_pca needs at least 2 finite feature vectors")
    if x.shape[0] > max_samples:
        rows = np.random.default_rng(seed).choice(x.shape[0], max_samples, replace=False)
        x = x[np.sort(rows)]
    x = x.astype(np.float64)
    mean = x.mean(axis=0)
    xc = x - mean
    cov = xc.T @ xc / (x.shape[0] - 1)
    evals, evecs = np.linalg.eigh(cov)
    order = np.argsort(evals)[::-1][:k]
    comps = evecs[:, order].T
    flip = np.sign(comps[np.arange(k), np.abs(comps).argmax(axis=1)])
    comps *= np.where(flip == 0, 1.0, flip)[:, None]
    total = float(np.clip(evals, 0, None).sum())
    ratio = np.clip(evals[order], 0, None) / total if total > 0 else np.zeros(k)
    return PcaBasis(mean=mean, components=comps, explained_variance_ratio=tuple(ratio))


def _bitround(x16: np.ndarray, keepbits: int) -> np.ndarray:
    import numcodecs

    return numcodecs.BitRound(keepbits=keepbits).encode(x16).view(np.float16)


def encode_features(
    features: np.ndarray, codec: FeatureCodec, pca: PcaBasis | None = None
) -> np.ndarray:
    """Raw ``[..., D]`` features -> the float16 array stored on disk (``[..., k]`` for PCA)."""
    if codec.pca_k is not None:
        _check_basis(codec, pca, features.shape[-1])
        x = np.empty((*features.shape[:-1], codec.pca_k), dtype=np.float16)
        for i in range(features.shape[0]):  # one image at a time bounds the float32 copy
            x[i] = pca.project(features[i])
    else:
        x = np.asarray(features, dtype=np.float16)
    if codec.keepbits is not None and x.size:
        x = _bitround(np.ascontiguousarray(x), codec.keepbits)
    return x


def decode_features(
    stored: np.ndarray, codec: FeatureCodec, pca: PcaBasis | None = None
) -> np.ndarray:
    """The stored float16 array -> float16 features ``[..., D]`` (what readers see)."""
    if codec.pca_k is None:
        return np.asarray(stored, dtype=np.float16)
    _check_basis(codec, pca, None)
    out = np.empty((*stored.shape[:-1], pca.dim), dtype=np.float16)
    for i in range(stored.shape[0]):
        out[i] = pca.reconstruct(stored[i])
    return out


def _check_basis(codec: FeatureCodec, pca: PcaBasis | None, dim: int | None) -> None:
    if pca is None:
        raise ValueError(
            f"feature codec {codec.name} needs a PCA basis: fit one with fit_pca(samples, "
            f"{codec.pca_k}) and store it with Cache.set_pca before writing scenes"
        )
    if pca.k != codec.pca_k:
        raise ValueError(f"PCA basis has k={pca.k} but the feature codec is {codec.name}")
    if dim is not None and pca.dim != dim:
        raise ValueError(f"PCA basis is for {pca.dim}-dim features; these have {dim} dims")


def feature_cosine(raw: np.ndarray, approx: np.ndarray) -> float:
    """Mean cosine similarity between matching feature vectors ``[..., D]``.

    Vectors that are zero in ``raw`` are left out; 1.0 when nothing is left.
    """
    if raw.shape != approx.shape:
        raise ValueError(f"feature_cosine: shapes differ, {raw.shape} vs {approx.shape}")
    if raw.size == 0:
        return 1.0
    a_all = raw.reshape(-1, raw.shape[-1])
    b_all = approx.reshape(-1, raw.shape[-1])
    total, count, step = 0.0, 0, 65536
    for s in range(0, a_all.shape[0], step):
        a = a_all[s : s + step].astype(np.float32)
        b = b_all[s : s + step].astype(np.float32)
        na = np.linalg.norm(a, axis=1)
        nb = np.linalg.norm(b, axis=1)
        keep = na > 0
        cos = (a * b).sum(axis=1)[keep] / np.maximum(na[keep] * nb[keep], 1e-30)
        total += float(cos.sum())
        count += int(keep.sum())
    return total / count if count else 1.0


def codec_fidelity(
    features: np.ndarray, codec: FeatureCodec | str, pca: PcaBasis | None = None
) -> float:
    """Mean cosine between ``features`` and what a reader gets back after ``codec``."""
    c = parse_codec(codec) if isinstance(codec, str) else codec
    return feature_cosine(features, decode_features(encode_features(features, c, pca), c, pca))
