"""Text rendering for the command line."""

from __future__ import annotations

from typing import Any

from ..codecs.base import Guarantee
from ..codecs.deepstd import base_layers


def human_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.2f} {unit}"
        n /= 1000
    raise AssertionError("unreachable")


def error_text(error: dict[str, Any]) -> str:
    """A lossy file's recorded error, as ``dstd compress`` and ``dstd info`` print it."""
    psnr = error.get("psnr_db")
    return (
        f"MAE {error.get('mae_hu', float('nan')):.2f} HU, max {error.get('max_error_hu', 0):.0f} HU, "
        f"PSNR {'inf' if psnr is None else f'{psnr:.2f}'} dB"
    )


def info_text(name: str, summary: dict[str, Any]) -> str:
    h = summary["header"]
    meta, codec, tiles, array = h["metadata"], h["codec"], h["tiles"], h["array"]
    shape = " x ".join(str(s) for s in array["shape"])
    spacing = " x ".join(f"{s:g}" for s in meta["spacing"])
    grid = tiles["grid"]
    sections = (
        ", ".join(f"{v['count']} {k} ({human_bytes(v['bytes'])})" for k, v in summary["sections"].items())
        or "none"
    )
    params = ", ".join(f"{k}={v}" for k, v in codec.get("params", {}).items())
    lines = [
        f"file          {name} ({human_bytes(summary['file_size'])})",
        f"format        dstd {summary['format_version']} (written by {h.get('writer', '?')})",
        f"array         {shape} (axes k, j, i) {array['dtype']}",
        f"spacing       {spacing} mm",
        "affine        "
        + "\n              ".join("[" + " ".join(f"{v:10.4f}" for v in row) + "]" for row in meta["affine"]),
        f"intensity     value = stored * {meta['slope']:g} + {meta['intercept']:g}"
        f"   modality {meta.get('modality') or '-'}   original dtype "
        f"{meta.get('original_dtype') or '-'}",
        f"codec         {codec['id']} v{codec['version']}"
        + (f" ({params})" if params else "")
        + (
            f"   model {codec['model']['id']} (sha256 {codec['model']['sha256'][:12]}...)"
            if codec.get("model")
            else ""
        ),
        f"tier          {Guarantee(**summary['tier']).describe(meta['slope'])}",
        f"tiles         {' x '.join(map(str, tiles['tile_shape']))} voxels, grid "
        f"{' x '.join(map(str, grid))} ({grid[0] * grid[1] * grid[2]} tiles)",
        f"sections      {sections}",
        f"header        {human_bytes(summary['header_bytes'])}"
        + (" (JSON)" if summary["format_version"].startswith("1.") else " (deflated JSON)"),
        f"ratio         {summary['ratio']:.2f}x (raw {human_bytes(summary['raw_nbytes'])})",
        f"original      sha256 {h.get('original_sha256', '-')}",
    ]
    state = codec.get("state") or {}
    if "mode" in state and "bits_per_voxel" in state:
        rates = state["bits_per_voxel"]
        target = {"ratio": f"target {state.get('target_ratio', 0):g}x"}.get(state["mode"], state["mode"])
        layer = base_layers.summary(state)
        lines.insert(
            -2,
            f"lossy         {target}, {layer} {sum(rates) / max(len(rates), 1):.4f} "
            f"bits/voxel, {state.get('outlier_voxels', 0)} voxels stored exactly, "
            f"refinement halo {state.get('halo', 0)}",
        )
    error = (h.get("stats") or {}).get("error")
    if isinstance(error, dict):
        lines.insert(-1, "error         " + error_text(error))
    if meta.get("attributes"):
        lines.append(f"attributes    {meta['attributes']}")
    return "\n".join(lines)
