"""``PatchDataset``: random or grid patches of a collection of ``.dstd`` scans for PyTorch.

Each patch decodes only the tiles under it, and each worker process keeps the tiles it decoded
(:mod:`.tile_cache`). Open volumes and caches belong to one process: a DataLoader worker,
forked or spawned, opens its own (fsspec filesystems must not cross a fork), so the dataset
pickles as its settings and the scans' geometry, read once in the parent.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from ..container.volume import Volume, open_volume
from ..errors import InvalidInputError, LabelMismatchError
from .sampling import (
    centring_ratios,
    check_patch,
    class_voxels,
    corner_around,
    grid_corners,
    random_corner,
)
from .sources import resolve_sources
from .tile_cache import DEFAULT_CACHE_BYTES, TileCache, read_patch

#: torch has no arithmetic on uint16/uint32: stored values of those types come as int32/int64.
_TORCH_SAFE = {np.dtype("uint16"): np.int32, np.dtype("uint32"): np.int64}


def torch_safe(array: np.ndarray) -> np.ndarray:
    """``array`` in a dtype torch computes with (uint16 as int32, uint32 as int64)."""
    return array.astype(_TORCH_SAFE.get(array.dtype, array.dtype), copy=False)


@dataclass(frozen=True)
class ScanInfo:
    """What sampling needs of a scan, read once: its name, URLs, shape and geometry."""

    name: str
    url: str
    label_url: str | None
    shape: tuple[int, int, int]
    affine: np.ndarray
    spacing: tuple[float, float, float]


@dataclass
class _ProcessState:
    """One process's open volumes, decoded tiles and label-class voxels."""

    pid: int
    cache: TileCache
    volumes: dict[str, Volume] = field(default_factory=dict)
    voxels: dict[int, dict] = field(default_factory=dict)


class PatchDataset(torch.utils.data.Dataset):
    """Patches of ``patch_size`` voxels (axis order ``[k, j, i]``, as the files store them) from
    every scan in ``sources`` (a folder, glob, ``dstd archive`` output, file or fsspec URL, or a
    list or mapping of them).

    ``sampling="random"``: ``samples_per_volume`` patches per scan per epoch at corners drawn from
    ``seed``, the epoch (:meth:`set_epoch`) and the index, so every worker draws the same ones;
    with ``labels`` (one label ``.dstd`` per scan: a mapping from scan name, a list in the scans'
    order, or a folder/glob whose files have the scans' names), ``foreground`` is the share of
    patches centred on a labelled voxel, or ``class_ratios`` the share per label value.
    ``sampling="grid"``: every patch at ``stride`` (default: the patch size) over every scan.

    Items are dicts: ``image`` (1, *patch_size) float32 scaled values (HU; ``scaled=False``: the
    stored values), ``label`` (1, *patch_size) int64 when labels are given, ``location`` (the
    corner), ``spacing`` (mm per axis), ``affine`` (the patch's own, array axis order, RAS+),
    ``scan`` (the scan's name). ``refine=False`` skips a lossy file's learned refinement (the
    slow part). ``cache_bytes`` bounds each process's decoded tiles.
    """

    def __init__(
        self,
        sources: Any,
        patch_size: Sequence[int],
        *,
        sampling: str = "random",
        samples_per_volume: int = 16,
        stride: Sequence[int] | None = None,
        labels: Any = None,
        foreground: float = 0.0,
        class_ratios: Mapping[int, float] | None = None,
        scaled: bool = True,
        refine: bool = False,
        seed: int = 0,
        cache_bytes: int = DEFAULT_CACHE_BYTES,
        storage_options: dict[str, Any] | None = None,
    ) -> None:
        if sampling not in ("random", "grid"):
            raise InvalidInputError(f"sampling must be 'random' or 'grid', got {sampling!r}")
        if int(samples_per_volume) < 1:
            raise InvalidInputError(f"samples_per_volume must be >= 1, got {samples_per_volume}")
        if labels is None and (foreground or class_ratios):
            raise InvalidInputError("foreground and class_ratios need labels")
        self.sampling, self.samples_per_volume = sampling, int(samples_per_volume)
        self.scaled, self.refine, self.seed, self.epoch = bool(scaled), bool(refine), int(seed), 0
        self.storage_options = storage_options
        self.ratios = centring_ratios(foreground, class_ratios) if labels is not None else {None: 1.0}
        TileCache(cache_bytes)  # refuses a bad budget here, not in a worker
        self.cache_bytes = int(cache_bytes)
        urls = resolve_sources(sources, storage_options)
        label_urls = _match_labels(labels, urls, storage_options)
        self.scans = [self._describe(name, url, label_urls.get(name)) for name, url in urls.items()]
        self.patch_size = check_patch(tuple(patch_size), self.scans[0].shape, self.scans[0].url)
        for scan in self.scans[1:]:
            check_patch(self.patch_size, scan.shape, scan.url)
        step = tuple(stride) if stride is not None else self.patch_size
        if len(step) != 3 or not all(int(s) >= 1 for s in step):
            raise InvalidInputError(f"stride must be three positive integers, got {stride!r}")
        self.stride = tuple(int(s) for s in step)
        self._grid = [
            (number, corner)
            for number, scan in enumerate(self.scans)
            for corner in grid_corners(scan.shape, self.patch_size, self.stride)
        ]
        self._state: _ProcessState | None = None

    def _describe(self, name: str, url: str, label_url: str | None) -> ScanInfo:
        with open_volume(url, self.storage_options) as volume:
            shape, affine, spacing = volume.shape, volume.affine, volume.spacing
        if label_url is not None:
            with open_volume(label_url, self.storage_options) as label:
                if label.shape != shape:
                    raise LabelMismatchError(
                        f"label {label_url} has shape {label.shape}; its scan {url} has {shape}"
                    )
        return ScanInfo(name, url, label_url, shape, affine, spacing)

    # -- the Dataset protocol ------------------------------------------------------------------
    def __len__(self) -> int:
        if self.sampling == "grid":
            return len(self._grid)
        return len(self.scans) * self.samples_per_volume

    def set_epoch(self, epoch: int) -> None:
        """Draw another set of random patches (call before each epoch's DataLoader pass)."""
        self.epoch = int(epoch)

    def corner(self, index: int) -> tuple[int, tuple[int, int, int]]:
        """(scan number, patch corner) of item ``index``: the same in every process."""
        if not 0 <= index < len(self):
            raise IndexError(f"patch {index} outside 0..{len(self) - 1}")
        if self.sampling == "grid":
            return self._grid[index]
        number = index // self.samples_per_volume
        scan = self.scans[number]
        rng = np.random.default_rng([self.seed, self.epoch, index])
        classes = list(self.ratios)
        chosen = classes[int(rng.choice(len(classes), p=list(self.ratios.values())))]
        if chosen is not None:
            voxels = self._class_voxels(number).get(chosen)
            if voxels is not None and len(voxels):
                voxel = voxels[int(rng.integers(len(voxels)))]
                return number, corner_around(voxel, scan.shape, self.patch_size)
        return number, random_corner(rng, scan.shape, self.patch_size)

    def __getitem__(self, index: int) -> dict[str, Any]:
        number, corner = self.corner(int(index))
        scan = self.scans[number]
        region = tuple(slice(c, c + p) for c, p in zip(corner, self.patch_size))
        state = self._process_state()
        volume = self._volume(scan.url)
        stored = read_patch(volume, region, state.cache, scan.url, self.refine)
        image = volume.scale(stored) if self.scaled else torch_safe(stored)
        affine = scan.affine.copy()
        affine[:3, 3] = scan.affine[:3, :3] @ np.asarray(corner, np.float64) + scan.affine[:3, 3]
        item = {
            "image": torch.from_numpy(np.ascontiguousarray(image)[None]),
            "location": torch.tensor(corner, dtype=torch.int64),
            "spacing": torch.tensor(scan.spacing, dtype=torch.float64),
            "affine": torch.from_numpy(affine),
            "scan": scan.name,
        }
        if scan.label_url is not None:
            label = read_patch(self._volume(scan.label_url), region, state.cache, scan.label_url, False)
            item["label"] = torch.from_numpy(label.astype(np.int64)[None])
        return item

    # -- per process ---------------------------------------------------------------------------
    def _process_state(self) -> _ProcessState:
        if self._state is None or self._state.pid != os.getpid():
            # A forked worker inherits the parent's state: its sockets and fsspec loops are not
            # its own, so it starts afresh (nothing is closed: the parent still owns them).
            self._state = _ProcessState(os.getpid(), TileCache(self.cache_bytes))
        return self._state

    def _volume(self, url: str) -> Volume:
        state = self._process_state()
        if url not in state.volumes:
            state.volumes[url] = open_volume(url, self.storage_options)
        return state.volumes[url]

    def _class_voxels(self, number: int) -> dict:
        state = self._process_state()
        if number not in state.voxels:
            scan = self.scans[number]
            assert scan.label_url is not None
            label = self._volume(scan.label_url).read()
            rng = np.random.default_rng([self.seed, number])
            state.voxels[number] = class_voxels(label, list(self.ratios), rng)
        return state.voxels[number]

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_state"] = None  # open files and caches stay with their process
        return state

    def close(self) -> None:
        """Close this process's open volumes and drop its decoded tiles."""
        state = self._state
        if state is not None and state.pid == os.getpid():
            for volume in state.volumes.values():
                volume.close()
        self._state = None

    def __repr__(self) -> str:
        return (
            f"<dstdformat.torch.PatchDataset of {len(self.scans)} scans, {len(self)} "
            f"{self.sampling} patches of {self.patch_size}>"
        )


def _match_labels(
    labels: Any, urls: dict[str, str], storage_options: dict[str, Any] | None
) -> dict[str, str]:
    """Scan name -> label URL: from a mapping by name, a list in the scans' order, or a
    folder/glob whose files have the scans' names."""
    if labels is None:
        return {}
    if isinstance(labels, Sequence) and not isinstance(labels, (str, bytes)):
        if len(labels) != len(urls):
            raise LabelMismatchError(f"{len(labels)} labels for {len(urls)} scans")
        return {name: os.fspath(label) for name, label in zip(urls, labels)}
    found = (
        {str(k): os.fspath(v) for k, v in labels.items()}
        if isinstance(labels, Mapping)
        else (resolve_sources(labels, storage_options))
    )
    missing = [name for name in urls if name not in found]
    if missing:
        raise LabelMismatchError(f"no label for scan {missing[0]} ({urls[missing[0]]}) in {labels!r}"[:300])
    return {name: found[name] for name in urls}
