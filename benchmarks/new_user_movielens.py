"""MovieLens-100K the way a new Keras user runs it: the README's Keras path, nothing tuned.

`DSPnet(DSPnetConfig(item_vocab_size=..., scene_vocab_size=..., max_len=50))`,
`compile(optimizer="adam")`, `fit` for 40 epochs on one window per user (the last 50 training
events, `make_dataset`'s defaults), then full-ranking NDCG@10 / HR@10 on the leave-one-out test
event with `evaluate_last_events`. Every DSPnetConfig default is left alone, so this measures
what the defaults give; `--item-loss` overrides one setting to compare against them.

It prints and saves `results.json` with the resolved item loss, the figures and RecBole's SASRec
anchor (`../shared/anchors`, NDCG@10 0.0640 on the same protocol) for the ratio.

    for seed in 0 1 2; do .venv/bin/python benchmarks/new_user_movielens.py --seed $seed \
        --out benchmarks/results/new_user_movielens/seed$seed; done
    .venv/bin/python benchmarks/new_user_movielens.py --summarize benchmarks/results/new_user_movielens
"""

from __future__ import annotations

import argparse
import json
import os
import time
from typing import Any, Dict

import numpy as np

import dspnet_tf  # noqa: F401  (Keras 2 before TensorFlow)

# RecBole 1.2.1's SASRec on MovieLens-100K, leave-one-out, full ranking (the project's anchor).
RECBOLE_SASREC_NDCG_AT_10 = 0.0640


def summarize(folder: str) -> Dict[str, Any]:
    """Mean and standard deviation over the seed runs under `folder`; writes summary.json/.md."""
    runs = []
    for name in sorted(os.listdir(folder)):
        path = os.path.join(folder, name, "results.json")
        if os.path.isfile(path):
            with open(path, encoding="utf-8") as handle:
                runs.append(json.load(handle))
    if not runs:
        raise SystemExit(f"{folder}: no <seed>/results.json to summarize")
    ndcg = np.array([r["ndcg@10"] for r in runs])
    summary = {"seeds": [r["seed"] for r in runs], "ndcg@10": ndcg.tolist(),
               "ndcg@10_mean": float(ndcg.mean()), "ndcg@10_std": float(ndcg.std(ddof=1))
               if len(runs) > 1 else 0.0,
               "recbole_sasrec_ndcg@10": RECBOLE_SASREC_NDCG_AT_10,
               "vs_recbole": float(ndcg.mean()) / RECBOLE_SASREC_NDCG_AT_10,
               "resolved_item_loss": sorted({r["resolved_item_loss"] for r in runs}),
               "repeat_pointer": sorted({r["repeat_pointer"] for r in runs}),
               "epochs": runs[0]["epochs"]}
    with open(os.path.join(folder, "summary.json"), "w", encoding="utf-8") as handle:
        json.dump(summary, handle, indent=2)
    lines = ["# The README's Keras path on MovieLens-100K", "",
             f"Every DSPnetConfig and make_dataset default, `compile(optimizer=\"adam\")`, "
             f"{summary['epochs']} epochs, test NDCG@10 with full ranking (leave-one-out). "
             f"Item loss resolved to {', '.join(summary['resolved_item_loss'])}; repeat pointer "
             f"{'kept' if summary['repeat_pointer'] == [True] else 'left out by fit (no repeats)'}.",
             "", "| seeds | NDCG@10 per seed | mean ± std | RecBole's SASRec | ratio |",
             "|---|---|---|---|---|",
             f"| {len(runs)} | {', '.join(f'{v:.4f}' for v in ndcg)} | "
             f"{summary['ndcg@10_mean']:.4f} ± {summary['ndcg@10_std']:.4f} | "
             f"{RECBOLE_SASREC_NDCG_AT_10:.4f} | {summary['vs_recbole']:.3f} x |"]
    with open(os.path.join(folder, "summary.md"), "w", encoding="utf-8") as handle:
        handle.write("\n".join(lines) + "\n")
    print("\n".join(lines))
    return summary


def main() -> None:
    """Parse the flags, train, evaluate, write results.json."""
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=40, help="default: %(default)s")
    parser.add_argument("--seed", type=int, default=0, help="default: %(default)s")
    parser.add_argument("--item-loss", default=None,
                        help="override DSPnetConfig.item_loss (default: leave the default)")
    parser.add_argument("--set", action="append", default=[], metavar="FIELD=JSON",
                        help="override one more DSPnetConfig field, e.g. repeat_pointer=false "
                             "(repeatable; for comparisons, not the measured default)")
    parser.add_argument("--batch-size", type=int, default=None,
                        help="make_dataset's batch size (default: make_dataset's own default)")
    parser.add_argument("--out", default="benchmarks/results/new_user_movielens")
    parser.add_argument("--summarize", metavar="DIR",
                        help="only summarize the seed runs under DIR (DIR/*/results.json)")
    args = parser.parse_args()
    if args.summarize:
        summarize(args.summarize)
        return

    import tensorflow as tf  # pylint: disable=import-outside-toplevel

    from dspnet_tf import DSPnet, DSPnetConfig  # pylint: disable=import-outside-toplevel
    from dspnet_tf.data import make_dataset  # pylint: disable=import-outside-toplevel
    from dspnet_tf.data.event_log import load_movielens_100k  # pylint: disable=import-outside-toplevel
    from dspnet_tf.data.splits import leave_one_out  # pylint: disable=import-outside-toplevel
    from dspnet_tf.evaluation import evaluate_last_events  # pylint: disable=import-outside-toplevel

    split = leave_one_out(load_movielens_100k())
    overrides = {} if args.item_loss is None else {"item_loss": args.item_loss}
    for setting in args.set:
        field, _, value = setting.partition("=")
        overrides[field] = json.loads(value)
    batching = {} if args.batch_size is None else {"batch_size": args.batch_size}
    config = DSPnetConfig(item_vocab_size=len(split.item_vocab),
                          scene_vocab_size=len(split.scene_vocab), max_len=50, **overrides)
    tf.keras.utils.set_random_seed(args.seed)
    model = DSPnet(config)
    model.compile(optimizer="adam")
    train_items, train_scenes = split.train
    started = time.perf_counter()
    model.fit(make_dataset(train_items, train_scenes, max_len=50, seed=args.seed, **batching),
              epochs=args.epochs, verbose=2)
    train_seconds = time.perf_counter() - started
    test_items, test_scenes = split.test
    metrics = evaluate_last_events(model, test_items, test_scenes, max_len=50)
    result = {
        "overrides": overrides, "batching": batching,
        "item_loss": config.item_loss,
        "resolved_item_loss": model.dspnet_config.item_loss,
        "repeat_pointer": model.repeat_pointer is not None,
        "training_repeat_share": model.dspnet_config.training_repeat_share,
        "epochs": args.epochs, "seed": args.seed, "users": len(split.users),
        "items": len(split.item_vocab) - 2,
        "ndcg@10": metrics["ndcg@10"], "hr@10": metrics["hr@10"],
        "recbole_sasrec_ndcg@10": RECBOLE_SASREC_NDCG_AT_10,
        "vs_recbole": metrics["ndcg@10"] / RECBOLE_SASREC_NDCG_AT_10,
        "train_seconds": train_seconds,
    }
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "results.json"), "w", encoding="utf-8") as handle:
        json.dump(result, handle, indent=2)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
