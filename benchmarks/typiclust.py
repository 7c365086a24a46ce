"""Benchmark TypiClust's selection (k-means + typicality) on pools the size of axal's studies.

Features are random (timing only): D=681 is the default model's pooled encoder pyramid
(``axal.mc_dropout.image_features``). For each pool size it prints one JSON line with the
seconds of one ``TypiClust.select`` of ``k`` units given ``labelled`` labelled ones.
Usage: python benchmarks/typiclust.py [--sizes 500 2000 8000] [--k 16] [--labelled 32]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from axal.acquisition import TypiClust  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", type=int, nargs="+", default=[500, 2000, 8000])
    parser.add_argument("--k", type=int, default=16)
    parser.add_argument("--labelled", type=int, default=32)
    parser.add_argument("--dim", type=int, default=681)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    for n in args.sizes:
        x = rng.normal(size=(n, args.dim)).astype(np.float32)
        features = {f"u{j:05d}": x[j] for j in range(n)}
        labelled = rng.normal(size=(args.labelled, args.dim))
        start = time.perf_counter()
        picks = TypiClust().select(
            dict.fromkeys(features, 0.0),
            args.k,
            np.random.default_rng(1),
            features=features,
            labelled_features=labelled,
        )
        seconds = time.perf_counter() - start
        print(
            json.dumps(
                {
                    "pool": n,
                    "dim": args.dim,
                    "k": args.k,
                    "labelled": args.labelled,
                    "picks": len(set(picks)),
                    "select_s": round(seconds, 3),
                }
            )
        )


if __name__ == "__main__":
    main()
