"""Pipeline parity: the TFX pipeline's pushed model vs the same model from the quality benchmark.

Runs the whole pipeline (LocalDagRunner) on a scene world, scores the pushed SavedModel on the
test split through its `evaluate_ranking` signature, trains the same DSPnet configuration with
`dspnet benchmark quality`'s code path on the same log, and reports both NDCG@10 values, their
ratio and the pipeline's wall time. Prints and saves JSON + Markdown.

    .venv/bin/python benchmarks/pipeline_parity.py --users 10000 --epochs 5 --out results/parity
"""

import argparse
import glob
import json
import os
import sys
import time


import dspnet_tf  # noqa: F401,E402  (Keras 2 before TensorFlow)

from dspnet_tf.evaluation.saved_model_scoring import score_example_files  # noqa: E402


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--users", type=int, default=10_000, help="scene-world users (default: %(default)s)")
    parser.add_argument("--epochs", type=int, default=5, help="training epochs for both (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0, help="world seed (default: %(default)s)")
    parser.add_argument("--out", required=True, help="output folder")
    args = parser.parse_args(argv)

    from dspnet_tf.data.scene_world import SceneWorld, SceneWorldConfig
    from dspnet_tf.evaluation.quality_benchmark import run_quality_benchmark
    from serving.model_manager import model_versions
    from tfx_pipeline.pipeline import run_locally

    # A pipeline folder from an earlier run holds its pushed versions and its blessed baseline:
    # a new model the Evaluator does not bless would not be pushed, and the old one scored.
    if os.path.exists(os.path.join(args.out, "pipeline")):
        parser.error(f"{os.path.join(args.out, 'pipeline')} exists (an earlier run): remove it or "
                     "choose another --out, so the model scored is the one this run pushes")
    world_dir = os.path.join(args.out, "world")
    if not os.path.exists(os.path.join(world_dir, "events.csv")):
        SceneWorld(SceneWorldConfig(users=args.users, seed=args.seed)).generate().write(world_dir)
    started = time.time()
    serving_dir = run_locally(os.path.join(world_dir, "events.csv"), os.path.join(args.out, "pipeline"),
                              model_config={"epochs": args.epochs}, enable_cache=False)
    pipeline_seconds = time.time() - started
    versions = model_versions(serving_dir)
    if not versions:
        raise SystemExit(f"the pipeline pushed no model to {serving_dir} (not blessed by the "
                         "Evaluator?); see the pipeline's log above")
    test_files = glob.glob(os.path.join(args.out, "pipeline", "pipeline_root", "SequenceExampleGen",
                                        "examples", "*", "Split-test", "*.gz"))
    pipeline_ndcg = float(score_example_files(versions[max(versions)],
                                              test_files)["ndcg@10"].mean())

    started = time.time()
    results = run_quality_benchmark(world_dir, os.path.join(args.out, "benchmark"), models=["dspnet"],
                                    seeds=[0], epochs=args.epochs, patience=args.epochs)
    benchmark_seconds = time.time() - started
    benchmark_ndcg = results["models"]["dspnet"]["ndcg@10"]["mean"]
    report = {"users": args.users, "epochs": args.epochs,
              "pipeline_test_ndcg@10": pipeline_ndcg, "benchmark_test_ndcg@10": benchmark_ndcg,
              "relative_difference": abs(pipeline_ndcg - benchmark_ndcg) / benchmark_ndcg,
              "pipeline_wall_seconds": pipeline_seconds, "benchmark_wall_seconds": benchmark_seconds,
              "oracle_ndcg@10": (results["oracle"] or {}).get("ndcg@10")}
    with open(os.path.join(args.out, "parity.json"), "w") as handle:
        json.dump(report, handle, indent=2)
    lines = ["| figure | value |", "|---|---|"] + [f"| {k} | {v:.4f} |" if isinstance(v, float)
                                                   else f"| {k} | {v} |" for k, v in report.items()]
    with open(os.path.join(args.out, "parity.md"), "w") as handle:
        handle.write("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
