"""When does FGSM training overfit catastrophically? FGSM and PGD accuracy of FGSM-trained models.

Notebook 05's recipe (a 3D CNN trained on clean clips, then fine-tuned adversarially; or trained
adversarially from random weights with ``--from-scratch``) at its
preset, with the FGSM variants that invite catastrophic overfitting (Wong et al. 2020): FGSM
from the clean clip (step eps) and FGSM with a random start and too large a step, for a few
budgets eps. For each: clean, FGSM and PGD top-1 on the evaluation clips after every epoch. A
catastrophic overfit is FGSM accuracy high while PGD accuracy is near 0.

    .venv/bin/python benchmarks/catastrophic_overfitting.py --eps 4,8,16 --epochs 6
"""
from __future__ import annotations

import argparse
import dataclasses

import pandas as pd

from vidlab.data.synthetic import ensure_dataset
from vidlab.notebook import DATASET_PRESET, default_data_dir
from vidlab.recipes import adversarial as adv


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="cpu", choices=sorted(adv.PRESETS))
    parser.add_argument("--data", default=None, help="dataset folder (default: the preset's synthetic data)")
    parser.add_argument("--eps", default="4,8,16", help="comma-separated budgets in 8-bit levels")
    parser.add_argument("--methods", default="fgsm_zero,fgsm_big_step,fgsm_rs", help="comma-separated training methods")
    parser.add_argument("--alpha-factor", type=float, default=None, help="step of fgsm_big_step in eps (default: preset)")
    parser.add_argument("--epochs", type=int, default=None, help="adversarial epochs (default: the preset's adv_epochs)")
    parser.add_argument("--ramp-epochs", type=float, default=None, help="eps ramp (default: the preset's)")
    parser.add_argument("--lr", type=float, default=None, help="peak learning rate (default: the preset's)")
    parser.add_argument("--widths", default=None, help="comma-separated channels per stage of the 3D CNN (default: the preset's)")
    parser.add_argument("--from-scratch", action="store_true",
                        help="train the FGSM runs from random weights (default: from the standard model)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    S = adv.PRESETS[args.preset]
    if args.alpha_factor is not None:
        S = dataclasses.replace(S, overfit_alpha_factor=args.alpha_factor)
    if args.widths:
        S = dataclasses.replace(S, model_widths=tuple(int(w) for w in args.widths.split(",")))
    if args.ramp_epochs is not None:
        S = dataclasses.replace(S, ramp_epochs=args.ramp_epochs)
    data_dir = args.data or default_data_dir(args.preset)
    ensure_dataset(data_dir, preset=DATASET_PRESET[args.preset], seed=0)
    data = adv.load_data(data_dir, S, progress=False)
    clips, labels = adv.eval_set(data.test, S.eval_per_class)
    track = adv.eval_set(data.test, S.track_per_class)
    standard = adv.train_method("standard", data, S, seed=args.seed, progress=False)
    print(f"standard model: {adv.attack_table(standard['model'], clips, labels, S)['clean']:.3f} clean top-1 "
          f"({len(labels)} test clips), {standard['seconds']:.0f} s")
    rows = []
    for level in (float(v) for v in args.eps.split(",")):
        s = dataclasses.replace(S, eps_levels=level, lr=args.lr or S.lr)
        for method in args.methods.split(","):
            run = adv.train_method(method, data, s, seed=args.seed, track=track,
                                   init=None if args.from_scratch else standard["model"],
                                   epochs=args.epochs or S.adv_epochs, progress=False)
            final = adv.attack_table(run["model"], clips, labels, s)
            t = run["track"]
            rows.append({"eps (levels)": level, "method": method, "clean": final["clean"], "FGSM": final["fgsm"],
                         "PGD": final["pgd"], "FGSM - PGD": final["fgsm"] - final["pgd"],
                         "PGD per epoch": " ".join(f"{v:.2f}" for v in t["pgd"]),
                         "FGSM per epoch": " ".join(f"{v:.2f}" for v in t["fgsm"]), "seconds": run["seconds"]})
            print(pd.DataFrame(rows[-1:]).round(3).to_string(index=False, header=len(rows) == 1), flush=True)
    table = pd.DataFrame(rows)
    print()
    print(table.round(3).to_string(index=False))
    collapsed = table[(table["PGD"] <= 0.10) & (table["FGSM - PGD"] >= 0.3)]
    print("\ncatastrophic overfits (PGD <= 0.10, FGSM at least 0.3 above it):",
          ", ".join(f"{r.method} at eps {r._1:g}" for r in collapsed.itertuples()) or "none")


if __name__ == "__main__":
    main()
