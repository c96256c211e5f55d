"""The codec flags of ``compress``, ``archive`` and ``to-zarr``, declared once: every command
takes the same set, and the codec (not the command) says which of them apply."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import Any

from ..codecs.deepstd import base_layers
from ..errors import InvalidInputError
from ..tiling import LAYOUTS

#: option name -> (flag keyword arguments); the flag is ``--`` + the name with dashes.
CODEC_FLAGS: dict[str, dict[str, Any]] = {
    "ratio": {
        "type": float,
        "help": "target compression ratio, raw bytes / file bytes (deepstd default: 256)",
    },
    "quality": {
        "type": float,
        "metavar": "DB",
        "help": "deepstd: PSNR in dB (over the -1024..3071 HU window) every tile reaches",
    },
    "max_error": {
        "type": float,
        "metavar": "HU",
        "help": "guaranteed bound on |decoded - original| on every voxel (stored units): predictive "
        "(whole numbers, JPEG-LS NEAR; the archive tier) or deepstd (no refinement)",
    },
    "model": {
        "help": "deepstd: refinement model id or .safetensors path; 'default' the bundled model; "
        "'none' codes without (default: the bundled model on the SPERR base, none on AV1, "
        "where it gains <5%%)",
    },
    "base": {
        "choices": base_layers.choices(),
        "help": "deepstd: base layer under the refinement (default auto: AV1 from 24x, SPERR "
        "below and for --max-error)",
    },
    "shape": {
        "metavar": "TEMPLATE",
        "help": "deepstd: also code the scan's shape against a reference template ('default': "
        "the shipped chest template; an id from DSTD_MODEL_PATH; or a .safetensors path). Falls "
        "back to texture only, saying why in the header, when the scan is far from the template "
        "or the shape does not pay off",
    },
    "layout": {
        "choices": tuple(LAYOUTS),
        "help": "tiles for a use, any codec: training (64x128x128, for random patch reads: "
        "fewer bytes and less decoding per patch, ~3%% more MAE at 128x); default (the codec's)",
    },
    "shape_policy": {
        "choices": ("best", "always"),
        "help": "deepstd --shape: best (default) codes both ways and keeps the closer one; "
        "always keeps the shape whenever the registration is usable",
    },
}


def flag_name(option: str) -> str:
    return "--" + option.replace("_", "-")


def add_codec_flags(parser: argparse.ArgumentParser, codecs: Sequence[str] | None, default: str) -> None:
    """``--codec`` (when ``codecs`` are given) and every codec option flag."""
    if codecs:
        parser.add_argument(
            "--codec",
            default=default,
            choices=codecs,
            help=f"codec (default: {default}; lossless keeps every voxel with Blosc, predictive "
            "losslessly or within --max-error at JPEG-LS / JPEG XL sizes)",
        )
    for option, kwargs in CODEC_FLAGS.items():
        parser.add_argument(flag_name(option), dest=option, **kwargs)


def codec_options(args: argparse.Namespace, codec_id: str | None = None) -> dict[str, Any]:
    """The options given on the command line, checked against the codec (``args.codec`` unless
    ``codec_id`` is given) before any data is read; ``--model none`` means no model."""
    from ..codecs.registry import get_codec_class

    options = {name: getattr(args, name) for name in CODEC_FLAGS if getattr(args, name) is not None}
    if options.get("model") == "none":
        options["model"] = None
    if options.get("shape_policy") and not options.get("shape"):
        raise InvalidInputError("--shape-policy needs --shape TEMPLATE")
    layout = options.pop("layout", None)  # the container's, not the codec's (save() takes it)
    get_codec_class(codec_id or args.codec).check_options(options, name_of=flag_name)
    return options if layout is None else {**options, "layout": layout}
