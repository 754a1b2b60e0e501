"""The backend-neutral sparse-convolution interface every backend implements.

Why this split: the architecture (MinkUNet34C) and its weights are defined once; only the
sparse convolution underneath is swappable (pure torch, spconv, MinkowskiEngine). The
contract below fixes everything that would otherwise make backends disagree:

Coordinates
    ``coords`` are int32 ``[N, 4]`` rows ``(batch, x, y, z)`` of integer voxel indices in
    stride-1 units. A tensor at tensor stride ``s`` has coordinates that are multiples of
    ``s`` (x, y, z; never the batch column). Negative coordinates are allowed.

Row order (what makes outputs of different backends comparable row by row)
    * stride 1: the order of the coordinates handed to :class:`SparseContext`.
    * stride ``2s`` (made by a strided conv from stride ``s``): the unique rows of
      ``(b, floor(x / 2s) * 2s, ...)`` sorted lexicographically by ``(b, x, y, z)``. It is
      computed here, by :meth:`SparseContext.coords`, and every backend must return features
      in exactly this order (a backend whose native order differs permutes its output).
    * a transposed conv from stride ``2s`` lands on the EXISTING stride-``s`` set of the
      context (as MinkowskiEngine's ``conv_tr`` does in MinkUNet), in that set's order.

Kernel offsets and the convolution sum
    :func:`kernel_offsets` gives the canonical order of the ``K^3`` offsets: itertools.product
    order over ``(dx, dy, dz)`` (z fastest, x slowest), each in ``-(K//2) .. K//2`` for odd
    ``K`` and ``0 .. K-1`` for even ``K``. Weights are ``[K^3, C_in, C_out]`` in that order,
    so ``state_dict``s are identical on every backend. For output coordinate ``u`` at stride
    ``s_out``::

        submanifold (stride 1):   y[u] = sum_k x[u + d_k * s_in] @ W[k]            (u in input set)
        strided (stride 2):       y[u] = sum_k x[u + d_k * s_in] @ W[k],  s_out = 2 * s_in
        transposed (stride 2):    y[v] = sum over (u, k) with v = u + d_k * s_out of x[u] @ W[k]
                                  (v in the existing set at s_out = s_in / 2)

    i.e. cross-correlation as in ``torch.nn.functional.conv3d`` (dense index ``[x, y, z]``),
    and the transposed conv uses exactly the (input, output, k) triples of the matching
    strided conv with the roles of input and output swapped. Missing neighbours contribute
    nothing. Only stride 1 and 2 are required.

Kernel maps
    A :class:`SparseContext` is built once per batch of coordinates and shared by every
    :class:`SparseTensor` of one forward pass; backends cache their kernel maps (or native
    objects) in :meth:`SparseContext.cached`, keyed by tuples that start with the backend's
    name, e.g. ``("torch", "subm", stride, kernel)``.
    Test-time training runs ~100 forward/backward passes on the same coordinates: build the
    context once and pass it to every forward, and no map is rebuilt.

A backend is a small class with a ``name`` and a ``conv`` method (:class:`Backend`); it lives
in ``model/sparse/<name>_backend.py`` and exposes ``make_backend() -> Backend``, importing
its third-party library inside that function (or at its module top: the module itself is only
imported by :func:`get_backend`). A missing library must raise ``ImportError``.
"""

from __future__ import annotations

import importlib
import itertools
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar, runtime_checkable

import torch
from torch import Tensor

__all__ = [
    "BACKEND_NAMES",
    "INSTALL_HINTS",
    "Backend",
    "BackendUnavailableError",
    "SparseContext",
    "SparseTensor",
    "available_backends",
    "coords_key",
    "conv_output_stride",
    "get_backend",
    "kernel_offsets",
]

T = TypeVar("T")

# Every backend this install knows; "torch" (the reference) and "table" are always available.
# Which one ``auto`` picks on a device is decided in ``select.py``, by measurement.
BACKEND_NAMES: tuple[str, ...] = ("torch", "table", "spconv", "minkowski")

INSTALL_HINTS: dict[str, str] = {
    "torch": "nothing to install (pure PyTorch)",
    "table": "nothing to install (pure PyTorch)",
    "spconv": "pip install spconv  (CPU; on GPU the CUDA wheel instead, e.g. spconv-cu121)",
    "minkowski": "scripts/build_minkowski.sh  (builds MinkowskiEngine 0.5.4 from source, ~5 min)",
}


class BackendUnavailableError(ImportError):
    """A sparse backend whose library is not installed (the message names the install)."""


def kernel_offsets(kernel_size: int, device: torch.device | str | None = None) -> Tensor:
    """Canonical kernel offsets, int64 ``[K^3, 3]``: product order, z fastest (see module doc)."""
    if kernel_size < 1:
        raise ValueError(f"kernel_size must be >= 1, got {kernel_size}")
    lo = -(kernel_size // 2) if kernel_size % 2 == 1 else 0
    rng = range(lo, lo + kernel_size)
    offs = list(itertools.product(rng, rng, rng))
    return torch.tensor(offs, dtype=torch.int64, device=device)


def coords_key(coords: Tensor, lo: Tensor, extent: Tensor) -> Tensor:
    """Encode ``(b, x, y, z)`` rows into int64 keys whose order is lexicographic.

    ``lo`` / ``extent`` (int64 ``[4]``) give the minimum and the size of each column's range;
    rows outside that box get meaningless keys, so callers pass a box that contains them.
    """
    c = coords.to(torch.int64) - lo
    e = extent
    return ((c[:, 0] * e[1] + c[:, 1]) * e[2] + c[:, 2]) * e[3] + c[:, 3]


def _floor_to(coords: Tensor, stride: int) -> Tensor:
    out = coords.clone()
    out[:, 1:] = torch.div(coords[:, 1:], stride, rounding_mode="floor") * stride
    return out


class SparseContext:
    """Coordinate sets per tensor stride plus each backend's cached kernel maps.

    Build once per batch of coordinates (``SparseContext(coords, backend)``) and reuse it for
    every forward pass over those coordinates. It holds no features and no autograd state,
    so reusing it across optimisation steps is safe.
    """

    def __init__(self, coords: Tensor, backend: str | Backend = "torch", *, check: bool = True):
        if coords.dim() != 2 or coords.shape[1] != 4:
            raise ValueError(f"coords must be [N, 4] (batch, x, y, z), got {tuple(coords.shape)}")
        if coords.dtype != torch.int32:
            raise TypeError(f"coords must be int32, got {coords.dtype}")
        self.backend: Backend = get_backend(backend) if isinstance(backend, str) else backend
        self.device = coords.device
        coords = coords.contiguous()
        c64 = coords.to(torch.int64)
        if coords.shape[0] > 0:
            self._lo = c64.min(0).values
            self._hi = c64.max(0).values
        else:
            self._lo = torch.zeros(4, dtype=torch.int64, device=self.device)
            self._hi = torch.zeros(4, dtype=torch.int64, device=self.device)
        if check and coords.shape[0] > 0:
            if int(self._lo[0]) < 0:
                raise ValueError("batch indices must be >= 0")
            keys = coords_key(coords, self._lo, self._hi - self._lo + 1)
            if torch.unique(keys).numel() != keys.numel():
                raise ValueError(
                    "coords contain duplicate (batch, x, y, z) rows; voxelize to one row per "
                    "voxel before building a SparseContext"
                )
        self.batch_size = int(self._hi[0]) + 1 if coords.shape[0] > 0 else 0
        self._coords: dict[int, Tensor] = {1: coords}
        self._parents: dict[int, Tensor] = {}
        self._cache: dict[Hashable, Any] = {}

    def __repr__(self) -> str:
        sets = ", ".join(f"s{s}:{c.shape[0]}" for s, c in sorted(self._coords.items()))
        return f"SparseContext(backend={self.backend.name!r}, {sets}, cached={len(self._cache)})"

    @property
    def strides(self) -> list[int]:
        """Tensor strides whose coordinate sets exist so far."""
        return sorted(self._coords)

    def bounds(self, pad: int = 0) -> tuple[Tensor, Tensor]:
        """``(lo, extent)`` int64 ``[4]`` of a box holding every set, padded by ``pad`` in xyz.

        Downsampled sets stay inside the stride-1 box rounded down, hence the padding
        covers them as long as ``pad`` >= the largest stride plus kernel reach.
        """
        p = torch.tensor([0, pad, pad, pad], dtype=torch.int64, device=self.device)
        lo = self._lo - p
        extent = self._hi + p - lo + 1
        if float(extent.double().prod()) >= 2.0**62:
            raise ValueError(
                f"coordinate range {extent.tolist()} too large for int64 keys; "
                "check the voxel size (coords must be integer voxel indices)"
            )
        return lo, extent

    def coords(self, stride: int) -> Tensor:
        """The canonical coordinate set at ``stride`` (a power of two), made on first use."""
        if stride in self._coords:
            return self._coords[stride]
        if stride < 1 or stride & (stride - 1):
            raise ValueError(f"tensor stride must be a power of two, got {stride}")
        self._downsample(stride)
        return self._coords[stride]

    def parent(self, stride: int) -> Tensor:
        """int64 ``[N_{stride/2}]``: row of each stride/2 voxel's cell in the ``stride`` set."""
        if stride not in self._parents:
            self._downsample(stride)
        return self._parents[stride]

    def _downsample(self, stride: int) -> None:
        fine = self.coords(stride // 2)
        floored = _floor_to(fine, stride)
        lo, extent = self.bounds(pad=stride)
        keys = coords_key(floored, lo, extent)
        uniq, inverse = torch.unique(keys, sorted=True, return_inverse=True)
        coarse = floored.new_empty((uniq.numel(), 4))
        coarse[inverse] = floored  # every fine row of a cell writes the same coordinates
        self._coords[stride] = coarse
        self._parents[stride] = inverse

    def cached(self, key: Hashable, build: Callable[[], T]) -> T:
        """Return ``self._cache[key]``, calling ``build()`` once to fill it (kernel maps etc.)."""
        if key not in self._cache:
            self._cache[key] = build()
        return self._cache[key]

    def clear_cache(self) -> None:
        """Drop cached kernel maps (e.g. to measure build time); coordinate sets stay."""
        self._cache.clear()


@dataclass(frozen=True, eq=False)
class SparseTensor:
    """Features on one coordinate set of a shared :class:`SparseContext`.

    ``coords`` is ``context.coords(stride)`` (kept for convenience; rows match ``feats``).
    """

    feats: Tensor
    coords: Tensor
    stride: int
    context: SparseContext

    def __post_init__(self) -> None:
        if self.feats.dim() != 2 or self.feats.shape[0] != self.coords.shape[0]:
            raise ValueError(
                f"feats {tuple(self.feats.shape)} do not match coords {tuple(self.coords.shape)}"
            )

    @classmethod
    def from_context(cls, feats: Tensor, context: SparseContext, stride: int = 1) -> SparseTensor:
        """Wrap ``feats`` (rows in the order of ``context.coords(stride)``)."""
        return cls(feats, context.coords(stride), stride, context)

    def replace(self, feats: Tensor) -> SparseTensor:
        """Same coordinates, new features (BN, activations, residual sums)."""
        return SparseTensor(feats, self.coords, self.stride, self.context)


@runtime_checkable
class Backend(Protocol):
    """What a sparse backend implements; see the module docstring for the exact semantics."""

    name: str

    def conv(
        self,
        x: SparseTensor,
        weight: Tensor,
        *,
        kernel_size: int,
        stride: int,
        transposed: bool,
    ) -> SparseTensor:
        """Sparse conv; ``weight`` is ``[K^3, C_in, C_out]`` in :func:`kernel_offsets` order.

        ``stride == 1`` (not transposed): submanifold, output on ``x``'s own coordinates.
        ``stride == 2``: output at ``x.stride * 2`` (``context.coords``) or, when
        ``transposed``, at ``x.stride // 2`` (the existing finer set). Must be differentiable
        w.r.t. ``x.feats`` and ``weight``, and return features in the context's row order.
        """
        ...


def conv_output_stride(
    x: SparseTensor, weight: Tensor, *, kernel_size: int, stride: int, transposed: bool
) -> int:
    """Check a conv call against the contract (shared by every backend); its output stride."""
    if weight.shape[0] != kernel_size**3 or weight.shape[1] != x.feats.shape[1]:
        raise ValueError(
            f"weight {tuple(weight.shape)} does not fit kernel {kernel_size} and "
            f"{x.feats.shape[1]} input channels"
        )
    if stride == 1 and not transposed:
        return x.stride
    if stride == 2 and not transposed:
        return 2 * x.stride
    if stride == 2 and transposed:
        fine = x.stride // 2
        if x.stride < 2 or fine not in x.context.strides:
            raise ValueError(
                f"transposed conv from stride {x.stride} needs the existing set at stride "
                f"{fine} in the context; it has {x.context.strides}"
            )
        return fine
    raise ValueError(f"unsupported conv: stride={stride}, transposed={transposed}")


def get_backend(name: str) -> Backend:
    """The backend called ``name``; a missing library raises with the command that installs it."""
    if name not in BACKEND_NAMES:
        raise ValueError(f"unknown sparse backend {name!r}; choose one of {BACKEND_NAMES}")
    if name in _BACKENDS:
        return _BACKENDS[name]
    modname = f"tttkd.model.sparse.{name}_backend"
    try:
        module = importlib.import_module(modname)
        backend = module.make_backend()
    except ImportError as err:
        if isinstance(err, ModuleNotFoundError) and err.name == modname:
            raise BackendUnavailableError(
                f"sparse backend {name!r} is not part of this tttkd install ({modname} missing)"
            ) from err
        raise BackendUnavailableError(
            f"sparse backend {name!r} is not available ({err}). Install it with: "
            f"{INSTALL_HINTS[name]}"
        ) from err
    _BACKENDS[name] = backend
    return backend


_BACKENDS: dict[str, Backend] = {}


def available_backends() -> list[str]:
    """Names of the backends that import here (``torch`` always)."""
    names = []
    for name in BACKEND_NAMES:
        try:
            get_backend(name)
        except BackendUnavailableError:
            continue
        names.append(name)
    return names
