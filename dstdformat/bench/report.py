"""Benchmark outputs: results.json, a Markdown table and rate-distortion plots (PNG)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from .bdrate import bd_rate_summary

COLUMNS = [
    ("codec", "codec", "{}"),
    ("target_ratio", "target", "{:g}"),
    ("achieved_ratio", "ratio", "{:.1f}"),
    ("mae", "MAE HU", "{:.2f}"),
    ("max_error", "max err", "{:.0f}"),
    ("psnr", "PSNR dB", "{:.2f}"),
    ("ssim", "SSIM", "{:.4f}"),
    ("dice_body", "Dice body", "{:.4f}"),
    ("dice_lungs", "Dice lungs", "{:.4f}"),
    ("dice_bone", "Dice bone", "{:.4f}"),
    ("hd95_bone", "HD95 bone mm", "{:.2f}"),
    ("encode_mbps_1t", "enc MB/s 1t", "{:.1f}"),
    ("encode_mbps_nt", "enc MB/s all", "{:.1f}"),
    ("decode_mbps_1t", "dec MB/s 1t", "{:.1f}"),
    ("decode_mbps_nt", "dec MB/s all", "{:.1f}"),
    ("peak_memory_mb", "peak MB", "{:.0f}"),
    ("status", "status", "{}"),
]


def _cell(row: dict[str, Any], key: str, fmt: str) -> str:
    value = row.get(key)
    if value is None:
        return "-"
    if isinstance(value, float) and math.isinf(value):
        return "inf"
    try:
        return fmt.format(value)
    except (ValueError, TypeError):
        return str(value)


def markdown_table(results: dict[str, Any]) -> str:
    run = results["run"]
    lines = [
        f"Run {run['date']} - dstdformat {run['dstdformat']} - {run['machine']} - "
        f"Python {run['python']} - all threads = {run['threads_all']}; "
        f"ratio = {run['ratio_definition']}; targets met within 5%.",
        "",
    ]
    for info in results["volumes"]:
        lines += [
            f"### {info['volume']} ({' x '.join(map(str, info['shape']))}, spacing "
            f"{' x '.join(f'{s:g}' for s in info['spacing'])} mm)",
            "",
            "| " + " | ".join(h for _, h, _ in COLUMNS) + " |",
            "|" + "|".join("---" if k in ("codec", "status") else "---:" for k, _, _ in COLUMNS) + "|",
        ]
        for row in results["records"]:
            if row["volume"] == info["volume"]:
                lines.append("| " + " | ".join(_cell(row, k, f) for k, _, f in COLUMNS) + " |")
        lines.append("")
        lines += bd_rate_table(_with_bd_rate(results)["bd_rate"], info["volume"])
    return "\n".join(lines)


def _with_bd_rate(results: dict[str, Any]) -> dict[str, Any]:
    """Results from older runs (no ``"bd_rate"``) get it computed from their records."""
    if "bd_rate" in results:
        return results
    return {**results, "bd_rate": bd_rate_summary(results["records"])}


def bd_rate_table(bd: dict[str, Any], volume: str) -> list[str]:
    """Markdown lines: one row per codec, a column per (reference, metric), reasons below."""
    rows = [r for r in bd["rows"] if r["volume"] == volume]
    if not rows:
        return []
    columns = list(dict.fromkeys((r["reference"], r["metric"]) for r in rows))
    cells = {(r["codec"], r["reference"], r["metric"]): r for r in rows}
    low, high = bd["ratio_range"]
    slack = 100 * bd.get("ratio_slack", 0)
    lines = [
        f"BD-rate (bytes at equal quality vs the reference; negative = smaller; {bd['method']} "
        "interpolation of log bytes over the shared quality range; points at "
        f"{low:g}x..{high:g}x, {slack:g}% slack):",
        "",
        "| codec | " + " | ".join(f"vs {ref} ({bd['metrics'].get(m, m)})" for ref, m in columns) + " |",
        "|---|" + "---:|" * len(columns),
    ]
    notes: dict[str, int] = {}  # reason -> footnote number (one codec's reasons often repeat)
    for codec in dict.fromkeys(r["codec"] for r in rows):
        line = []
        for ref, metric in columns:
            row = cells.get((codec, ref, metric))
            if codec == ref:
                line.append("ref")
            elif row is None:
                line.append("-")
            elif row["bd_rate_percent"] is None:
                line.append(f"n/a [{notes.setdefault(row['reason'], len(notes) + 1)}]")
            else:
                line.append(f"{row['bd_rate_percent']:+.1f}%")
        lines.append(f"| {codec} | " + " | ".join(line) + " |")
    lines.append("")
    if notes:
        lines += [f"[{n}] {note}  " for note, n in notes.items()] + [""]
    return lines


def plot(results: dict[str, Any], out: Path) -> list[Path]:
    """MAE, SSIM and speed against achieved ratio; one line per codec, one panel per volume."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figures = [
        ("mae", "MAE (HU)", "mae_vs_ratio.png", True),
        ("ssim", "SSIM", "ssim_vs_ratio.png", False),
        ("encode_mbps_nt", "MB/s (all threads; solid encode, dashed decode)", "speed_vs_ratio.png", True),
    ]
    volumes = [v["volume"] for v in results["volumes"]]
    written = []
    for key, label, name, logy in figures:
        fig, axes = plt.subplots(1, len(volumes), figsize=(6.5 * len(volumes), 4.8), squeeze=False)
        for ax, volume in zip(axes[0], volumes):
            rows = [
                r
                for r in results["records"]
                if r["volume"] == volume and r.get("achieved_ratio") and r.get(key) is not None
            ]
            for codec in dict.fromkeys(r["codec"] for r in rows):
                points = sorted(
                    {
                        (r["achieved_ratio"], r[key], r.get("decode_mbps_nt"))
                        for r in rows
                        if r["codec"] == codec
                    }
                )
                xs = [p[0] for p in points]
                (line,) = ax.plot(xs, [p[1] for p in points], marker="o", label=codec)
                if key == "encode_mbps_nt":
                    ax.plot(xs, [p[2] for p in points], marker="x", linestyle="--", color=line.get_color())
            ax.set_xscale("log", base=2)
            if logy:
                ax.set_yscale("log")
            ax.set_xlabel("compression ratio (raw int16 / compressed)")
            ax.set_ylabel(label)
            ax.set_title(volume)
            ax.grid(True, which="both", alpha=0.3)
        axes[0][-1].legend(fontsize=8, loc="best")
        fig.tight_layout()
        path = out / name
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(path)
    return written


def json_safe(value: Any) -> Any:
    """Standard JSON has no infinities: write them as the strings "inf" / "-inf" / "nan"."""
    if isinstance(value, float) and not math.isfinite(value):
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    return value


def write_reports(results: dict[str, Any], out: Path) -> list[Path]:
    """results.json (with the BD-rates), results.md (tables, BD-rate tables) and the plots."""
    results = _with_bd_rate(results)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(json_safe(results), indent=2, allow_nan=False) + "\n")
    (out / "results.md").write_text(markdown_table(results) + "\n")
    return [out / "results.json", out / "results.md", *plot(results, out)]
