"""`edgeasr quantize`: apply a method to a model and write a quantized checkpoint."""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    from edgeasr.metrics.bits import DEFAULT_HEAD_BLOCK
    from edgeasr.quant.budget import ESTIMATORS
    from edgeasr.quant.recipe import parse_group_at, parse_option

    p = sub.add_parser("quantize", help="quantize a model (recipe file or flags) into a checkpoint")
    p.add_argument("--recipe", type=Path, help="TOML recipe: a path, or the NAME of a shipped recipe (models/recipes/NAME.toml)")
    p.add_argument("--model", help="zoo name, transformers dir or Hub id")
    p.add_argument("--method", help="method name (see --list)")
    p.add_argument("--w-bits", type=int, help="weight bits 2-8 (16 = FP)")
    p.add_argument("--a-bits", type=int, help="activation bits 4, 6, 8 or 16")
    p.add_argument("--group-size", type=int, help="columns per scale (power of two >= 16; 0 = per channel)")
    p.add_argument("--symmetric", action="store_true", default=None, help="symmetric weight grid")
    p.add_argument("--calib-clips", type=int,
                   help="number of calibration sequences (each joins up to the recipe's calibration.concat utterances)")
    p.add_argument("--calib-set", help="calibration data set or manifest")
    p.add_argument("--calib-dir", type=Path,
                   help="calibrate on a folder of your own unlabelled recordings (any rate, mono or stereo)")
    p.add_argument("--budget-mb", type=float,
                   help="choose bits per layer (2, 4, 8) so the bundle fits this many MB (10^6 bytes); see docs/budgets.md")
    p.add_argument("--avg-bits", type=float, help="choose bits per layer for this many effective bits per weight")
    p.add_argument("--sensitivity", choices=ESTIMATORS, default=ESTIMATORS[0],
                   help="label-free per-layer sensitivity for --budget-mb/--avg-bits: myqasr = median FP activation "
                        "(myQASR, default, seconds), kl = change of the decoder's token distribution with one layer "
                        "quantized (minutes; scored once per model and cached), joint = the order found by lowering one sublayer at a "
                        "time, measuring that KL with every earlier choice applied (minutes; cached), "
                        "hessian = rounding error x input energy, method = that KL with each layer as the method "
                        "itself quantizes it (its uniform 2/4/8-bit models; the slowest, the best at 3 bits)")
    p.add_argument("--head-group-size", type=int, default=DEFAULT_HEAD_BLOCK,
                   help="for --budget-mb: the bundle's 4-bit head will be exported in groups of this many columns "
                        "(edgeasr export --head-group-size), so the budget counts it so")
    p.add_argument("--group-at", nargs="+", default=[], metavar="BITS=GROUP", type=parse_group_at,
                   help="group size of the layers stored at BITS (e.g. 2=32: a mixed recipe's 2-bit layers in groups "
                        "of 32, the rest at --group-size)")
    p.add_argument("--option", action="append", default=[], metavar="KEY=VALUE", type=parse_option,
                   help="method option (repeatable)")
    p.add_argument("--out", type=Path, help="checkpoint directory (default: the cache)")
    p.add_argument("--list", action="store_true", help="list methods and their options")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from edgeasr.quant.api import quantize_to_checkpoint
    from edgeasr.quant.methods import available_methods
    from edgeasr.quant.recipe import Recipe

    if args.list:
        for name, info in available_methods().items():
            fields = ", ".join(f"{f.name}={f.default!r}" for f in dataclasses.fields(info.options))
            calibration = ("calibrated" if info.uses_calibration({})
                           else "by option" if callable(info.calibrated) else "no calibration")
            print(f"{name:12} {calibration:15} {info.summary}")
            if fields:
                print(f"{'':12} options: {fields}")
        return 0
    base = Recipe.from_toml(args.recipe) if args.recipe else None
    if base is None and not args.model:
        raise SystemExit("edgeasr quantize: give --recipe FILE or --model NAME (see --help)")
    recipe = base or Recipe(args.model)
    changes = {k: v for k, v in {"model": args.model, "method": args.method, "w_bits": args.w_bits,
                                 "a_bits": args.a_bits, "group_size": args.group_size,
                                 "symmetric": args.symmetric}.items() if v is not None}
    options = dict(recipe.options)
    options.update(args.option)
    calibration = recipe.calibration
    if args.calib_set and args.calib_dir:
        raise SystemExit("edgeasr quantize: give --calib-set or --calib-dir, not both")
    if args.calib_dir:
        from edgeasr.quant.user_audio import folder_manifest

        args.calib_set = str(folder_manifest(args.calib_dir))
    if args.calib_clips or args.calib_set:
        calibration = dataclasses.replace(calibration, **{k: v for k, v in {
            "n_clips": args.calib_clips, "dataset": args.calib_set}.items() if v})
    if args.group_at:
        changes["group_size_at"] = {**recipe.group_size_at, **dict(args.group_at)}
    recipe = dataclasses.replace(recipe, **changes, options=options, calibration=calibration)
    if args.budget_mb is not None or args.avg_bits is not None:
        from edgeasr.quant.mixed import BudgetOptions, plan

        budget = BudgetOptions(args.budget_mb, args.avg_bits, args.sensitivity, args.head_group_size)
        recipe, allocation, _, fixed = plan(recipe, budget)
        print(f"bits per layer: {allocation.histogram} (layers per width); "
              + (f"linears {allocation.cost / 1e6:.3f} MB + rest {fixed / 1e6:.3f} MB of {args.budget_mb} MB"
                 if args.budget_mb is not None else f"{allocation.cost / max(allocation.budget, 1) * args.avg_bits:.3f} "
                 f"effective bits per weight (target {args.avg_bits})"))
    path = quantize_to_checkpoint(recipe, args.out)
    if recipe.layer_bits or recipe.group_size_at:  # the chosen bits, readable and reusable with --recipe
        (path / "recipe.toml").write_text(recipe.to_toml())
        print(f"recipe with per-layer bits: {path / 'recipe.toml'}")
    print(f"checkpoint: {path}")
    return 0
