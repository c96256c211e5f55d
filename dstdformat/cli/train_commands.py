"""``dstd train``: its options and the work behind it (the loops live in ``dstdformat.training``)."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

from ..errors import InvalidInputError


def add_parser(add: Callable[[str, str], argparse.ArgumentParser]) -> None:
    """The ``dstd train`` subcommand."""
    p = add("train", "train a learned model on CT volumes (resumes from --out)")
    p.add_argument("sources", nargs="*", help="NIfTI files, folders or globs")
    p.add_argument(
        "--collection",
        metavar="DIR",
        help="DeepSTD's three steps on the scans in DIR: choose the reference template, "
        "align every scan to it (shape), train the texture refinement on the "
        "aligned scans; resumes step by step and scan by scan",
    )
    p.add_argument(
        "--shape-steps", type=int, default=2500, help="--collection: SIREN steps per scan (the paper's 2,500)"
    )
    p.add_argument(
        "--cycle-weight",
        type=float,
        default=0.1,
        help="--collection: weight of the cycle-consistency term (default 0.1, as the "
        "codec's shape coding; the paper's 0.001 left the warp 2-3x lossier)",
    )
    p.add_argument(
        "--limited-data",
        action="store_true",
        help="refiner, for small collections: fine-tune the bundled model with "
        "distillation from it and strong augmentation (1,500 steps at 1e-4 unless "
        "--steps / --lr say otherwise)",
    )
    p.add_argument("--init-from", metavar="MODEL", help="refiner: start from this model's weights")
    p.add_argument(
        "--teacher", metavar="MODEL", help="refiner: distil from this model (weight --teacher-weight)"
    )
    p.add_argument("--teacher-weight", type=float, help="weight of the distillation term (default 0.5)")
    p.add_argument(
        "--augment",
        choices=("flips", "strong"),
        help="refiner crops: in-plane flips (default), or flips on every axis and transposition",
    )
    p.add_argument(
        "--processes",
        type=int,
        metavar="N",
        help="refiner: DistributedDataParallel processes (default: one per GPU when "
        "there are several, else 1; on the CPU they share the cores)",
    )
    p.add_argument("--out", required=True, help="run folder (checkpoints); resumes if it holds one")
    p.add_argument(
        "--base",
        choices=("av1", "sperr"),
        default="av1",
        help="refiner: base layer the training pairs are coded with (default av1, the "
        "codec's default; deepstd-refine-v1 was trained on sperr)",
    )
    p.add_argument("--steps", type=int, help="total optimizer steps (default 20,000)")
    p.add_argument("--batch", type=int, default=4, help="crops per step")
    p.add_argument(
        "--crop",
        type=int,
        nargs=3,
        metavar=("K", "J", "I"),
        help="crop size in voxels (default 32 64 64)",
    )
    p.add_argument("--lr", type=float, help="learning rate (default 3e-4)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--exclude",
        nargs="*",
        default=[],
        help="file names to keep out of training (held-out evaluation scans)",
    )
    p.add_argument(
        "--eval",
        nargs="*",
        default=[],
        metavar="FILE",
        help="refiner: held-out scans whose MAE is logged at every checkpoint",
    )
    p.add_argument(
        "--export",
        metavar="MODEL_ID",
        help="refiner: when done, write MODEL_ID.safetensors/.json into --out; use it "
        "(and, with --collection, the template beside it) through DSTD_MODEL_PATH",
    )
    p.add_argument("--channels", type=int, help="network width (default 32)")
    p.add_argument("--blocks", type=int, help="refiner: residual blocks (default 3)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, ...")
    p.set_defaults(func=train)


def train(args: argparse.Namespace) -> int:
    from ..training.data import training_paths

    if args.collection:
        return _train_collection(args)
    if not args.sources:
        raise InvalidInputError("name the training scans (files, folders or globs), or use --collection DIR")
    paths = [str(p) for p in training_paths(args.sources) if p.name not in set(args.exclude)]
    if not paths:
        raise InvalidInputError("no training volumes left after --exclude")
    try:
        return _train_refiner(args, paths)
    except ValueError as exc:
        raise InvalidInputError(str(exc)) from None


def _train_collection(args: argparse.Namespace) -> int:
    from ..model.registration import RegistrationConfig
    from ..training.collection import CollectionTrainConfig, train_collection
    from ..training.data import training_paths

    if args.sources:
        raise InvalidInputError("--collection takes the scans from its folder; drop the other sources")
    if not Path(args.collection).is_dir():
        raise InvalidInputError(f"--collection {args.collection} is not a folder")
    paths = [str(p) for p in training_paths([args.collection]) if p.name not in set(args.exclude)]
    config = CollectionTrainConfig(
        sources=paths,
        out=args.out,
        registration=RegistrationConfig(
            steps=args.shape_steps, cycle_weight=args.cycle_weight, seed=args.seed
        ),
        texture=_refiner_settings(args),
    )
    try:
        summary = train_collection(config, progress=not args.quiet, export=args.export)
    except ValueError as exc:
        raise InvalidInputError(str(exc)) from None
    if not args.quiet:
        print(
            f"reference {summary['reference']} (template {summary['template_sha256'][:12]}); "
            f"{summary['aligned']} scans aligned, {len(summary['texture_only'])} texture-only "
            f"{summary['texture_only']}; {summary['resumed_scans']} resumed; output in {args.out}"
        )
    return 0


def _refiner_settings(args: argparse.Namespace) -> dict:
    """RefinerTrainConfig fields from the command line (both `train` and `train --collection`)."""
    from ..model.refine import RefinerConfig
    from ..training.refiner import RefinerTrainConfig, refiner_settings

    crop = tuple(args.crop or RefinerTrainConfig.crop)
    if any(c <= 0 or c % 2 for c in crop):
        raise InvalidInputError(f"--crop sizes must be positive and even, got {crop}")
    if args.processes is not None and args.processes < 1:
        raise InvalidInputError(f"--processes must be at least 1, got {args.processes}")
    settings = refiner_settings(
        base=getattr(args, "base", "av1"),
        limited_data=args.limited_data,
        steps=args.steps,
        learning_rate=args.lr,
        init_from=args.init_from,
        teacher=args.teacher,
        teacher_weight=args.teacher_weight,
        augment=args.augment,
        world_size=args.processes,
    )
    return {
        **settings,
        "batch_size": args.batch,
        "crop": crop,
        "seed": args.seed,
        "device": args.device,
        "model": {
            "channels": args.channels or RefinerConfig.channels,
            "blocks": args.blocks or RefinerConfig.blocks,
        },
    }


def _train_refiner(args: argparse.Namespace, paths: list[str]) -> int:
    from ..training.refiner import RefinerTrainConfig, export_model, train_refiner

    config = RefinerTrainConfig(
        sources=paths, out=args.out, eval_sources=list(args.eval), **_refiner_settings(args)
    )
    last = train_refiner(config, progress=not args.quiet)
    if args.export:
        weights = export_model(args.out, args.export, args.out)
        if not args.quiet:
            print(f"model {args.export} written to {weights}")
    if not args.quiet and last:
        print(f"step {last['step']}: training MAE {last['train_mae_hu']:.2f} HU; checkpoint in {args.out}")
    return 0
