"""`create_pipeline`: the DSPnet TFX pipeline with every path and knob as an argument."""

from __future__ import annotations

import os
from typing import Any, Dict, List, Optional

from tfx import v1 as tfx

from tfx_pipeline import drift, spans
from tfx_pipeline.anomalies_gate import AnomaliesGate
from tfx_pipeline.evaluation import eval_config
from tfx_pipeline.pusher import AtomicPusher, LatestPushedModelStrategy
from tfx_pipeline.sequence_example_gen import SequenceExampleGen

# Fast, single-process defaults for a 2-core machine; override with real runner arguments.
LOCAL_BEAM_ARGS = ["--direct_running_mode=in_memory", "--direct_num_workers=1"]
TRANSFORM_KEYS = ("max_len", "item_frequency_threshold", "item_oov_buckets")


def create_pipeline(
    pipeline_name: str,
    pipeline_root: str,
    data_root: str,
    serving_model_dir: str,
    metadata_path: Optional[str] = None,
    model_config: Optional[Dict[str, Any]] = None,
    max_events: int = 200,
    skip_malformed: bool = False,
    beam_pipeline_args: Optional[List[str]] = None,
    enable_cache: bool = True,
    ndcg_floor: float = 0.0,
    data_stages_only: bool = False,
    blessing_task: str = "in_scene",
    range_config: Optional[tfx.proto.RangeConfig] = None,
    on_drift: str = "stop",
    scene_drift_threshold: float = drift.DEFAULT_SCENE_THRESHOLD,
    item_drift_threshold: float = drift.DEFAULT_ITEM_THRESHOLD,
    warm_start: bool = True,
) -> tfx.dsl.Pipeline:
    """Event log -> SequenceExampleGen -> StatisticsGen -> SchemaGen -> ExampleValidator ->
    AnomaliesGate -> Transform -> Trainer -> Evaluator (vs the latest blessed model) -> Pusher.

    With a span pattern, SpanDriftGate (`tfx_pipeline.drift`) also runs before Transform: the
    span's own events against the previous span's.

    Args:
      pipeline_name: name recorded in ML Metadata.
      pipeline_root: where component outputs go.
      data_root: the event log (CSV/Parquet file or folder), or a span pattern such as
        `out/events/span-{SPAN}/*`: a folder per day; the latest span (or `range_config`'s)
        is trained on, with every span up to it read (`tfx_pipeline.spans`).
      serving_model_dir: Pusher's base directory (<dir>/<version>/saved_model.pb).
      metadata_path: SQLite ML Metadata file (local runs); None for orchestrators that bring
        their own metadata store (Kubeflow).
      model_config: DSPnetConfig fields, training options (`epochs`, `batch_size`,
        `learning_rate`, `top_k`) and Transform options (`max_len`, `item_frequency_threshold`,
        `item_oov_buckets`).
      max_events: events kept per user by the ExampleGen.
      skip_malformed: skip malformed event-log rows instead of failing.
      beam_pipeline_args: Beam arguments (default: in-memory DirectRunner, one worker).
      enable_cache: reuse outputs of components whose inputs did not change.
      ndcg_floor: the Evaluator blesses (and Pusher pushes) only models whose eval NDCG@10
        (of `blessing_task`) reaches this floor and is not below the latest blessed model's.
      blessing_task: "in_scene" (default: the task served requests pose; on a one-scene log
        it is the next-event task) or "next_event".
      data_stages_only: stop after Transform (ExampleGen, statistics, schema, validation,
        Transform): the data half, e.g. for the pipeline-scaling benchmark.
      range_config: with a span pattern, the span to train on (`spans.static_range(n)`);
        None: the latest.
      on_drift: with a span pattern, what a span that drifted from the previous span does:
        "stop" fails the run before Transform, naming the feature and the distance; "warn"
        logs it (and records it on SpanDriftGate's anomalies) and trains.
      scene_drift_threshold: the largest L-infinity distance between two days' scene
        distributions that is not drift.
      item_drift_threshold: the largest Jensen-Shannon divergence between two days' item
        distributions that is not drift.
      warm_start: the Trainer starts from the baseline resolver's model when there is one
        (its `base_model`: the latest blessed and pushed model), rows mapped by token, for
        `model_config["warm_start_epochs"]` epochs (default 1; `tfx_pipeline.trainer.run_fn`).
        False: every run trains from scratch for `epochs`. A rerun after this run's model was
        pushed trains again, from that model (its base model changed).
    """
    drift.check_on_drift(on_drift)
    model_config = dict(model_config or {})
    transform_config = {k: model_config[k] for k in TRANSFORM_KEYS if k in model_config}
    example_gen = SequenceExampleGen(max_events=max_events, skip_malformed=skip_malformed,
                                     **_example_gen_input(data_root, range_config))
    statistics_gen = tfx.components.StatisticsGen(examples=example_gen.outputs["examples"])
    schema_gen = tfx.components.SchemaGen(statistics=statistics_gen.outputs["statistics"],
                                          infer_feature_shape=False)
    example_validator = tfx.components.ExampleValidator(
        statistics=statistics_gen.outputs["statistics"], schema=schema_gen.outputs["schema"])
    anomalies_gate = AnomaliesGate(anomalies=example_validator.outputs["anomalies"])
    transform = tfx.components.Transform(
        examples=example_gen.outputs["examples"],
        schema=schema_gen.outputs["schema"],
        preprocessing_fn="tfx_pipeline.preprocessing.preprocessing_fn",
        custom_config=transform_config,
        splits_config=tfx.proto.SplitsConfig(analyze=["train"], transform=["train", "eval", "test"]),
    )
    transform.add_upstream_node(anomalies_gate)  # no training on data that failed validation
    drift_gates = []
    if spans.has_span_spec(data_root):
        input_base, pattern = spans.split_span_path(data_root)
        drift_gate = drift.SpanDriftGate(
            examples=example_gen.outputs["examples"], input_base=input_base,
            input_pattern=pattern, on_drift=on_drift, scene_threshold=scene_drift_threshold,
            item_threshold=item_drift_threshold, skip_malformed=skip_malformed)
        transform.add_upstream_node(drift_gate)  # a drifted day stops before Transform
        drift_gates.append(drift_gate)
    baseline = tfx.dsl.Resolver(
        # The latest blessed model that was pushed: a rerun after a kill between blessing and
        # push keeps its cache (tfx_pipeline/pusher.py). Kubeflow V2 compiles only TFX's own.
        strategy_class=(LatestPushedModelStrategy if metadata_path
                        else tfx.dsl.experimental.LatestBlessedModelStrategy),
        model=tfx.dsl.Channel(type=tfx.types.standard_artifacts.Model),
        model_blessing=tfx.dsl.Channel(type=tfx.types.standard_artifacts.ModelBlessing),
    ).with_id("latest_blessed_model_resolver")
    trainer = tfx.components.Trainer(
        run_fn="tfx_pipeline.trainer.run_fn",
        # Warm start from the baseline's model (none on a first run: trained from scratch).
        base_model=baseline.outputs["model"] if warm_start else None,
        examples=transform.outputs["transformed_examples"],
        transform_graph=transform.outputs["transform_graph"],
        schema=schema_gen.outputs["schema"],
        train_args=tfx.proto.TrainArgs(splits=["train"]),
        eval_args=tfx.proto.EvalArgs(splits=["eval"]),
        custom_config=model_config,
    )
    evaluator = tfx.components.Evaluator(
        examples=example_gen.outputs["examples"],
        model=trainer.outputs["model"],
        baseline_model=baseline.outputs["model"],
        example_splits=["eval"],
        eval_config=eval_config(ndcg_floor=ndcg_floor, blessing_task=blessing_task),
    )
    # TFX's Pusher with a staged copy renamed into place, pushing a model once across reruns
    # of a killed run (tfx_pipeline/pusher.py says why the stock executor is not enough).
    pusher = AtomicPusher(
        model=trainer.outputs["model"],
        model_blessing=evaluator.outputs["blessing"],
        push_destination=tfx.proto.PushDestination(
            filesystem=tfx.proto.PushDestination.Filesystem(base_directory=serving_model_dir)),
    ).with_id("Pusher")
    components = [example_gen, statistics_gen, schema_gen, example_validator, anomalies_gate,
                  *drift_gates, transform]
    if not data_stages_only:
        components += [baseline, trainer, evaluator, pusher]
    return tfx.dsl.Pipeline(
        pipeline_name=pipeline_name,
        pipeline_root=pipeline_root,
        components=components,
        enable_cache=enable_cache,
        metadata_connection_config=(
            tfx.orchestration.metadata.sqlite_metadata_connection_config(metadata_path)
            if metadata_path else None),
        beam_pipeline_args=list(beam_pipeline_args or LOCAL_BEAM_ARGS),
    )


def _example_gen_input(data_root: str,
                       range_config: Optional[tfx.proto.RangeConfig]) -> Dict[str, Any]:
    """SequenceExampleGen's input arguments for a path or a `{SPAN}` pattern."""
    if not spans.has_span_spec(data_root):
        if range_config is not None:
            raise spans.SpanError(f"range_config given, but the data {data_root} has no "
                                  f"{spans.SPAN_SPEC} pattern")
        return {"input_base": data_root}
    input_base, pattern = spans.split_span_path(data_root)
    arguments: Dict[str, Any] = {"input_base": input_base, "input_pattern": pattern}
    if range_config is not None:
        arguments["range_config"] = spans.range_config_to_json(range_config)
    if os.path.isdir(input_base):
        # The spans as they are now: a new span or changed file then misses the cache, as a
        # stock ExampleGen's driver makes it. A bad pattern fails here, before any run; a
        # remote base (gs://, compiled for Kubeflow) is resolved when the component runs.
        arguments["input_fingerprint"] = spans.resolve_spans(
            input_base, pattern, range_config).fingerprint
    return arguments


def local_serving_dir(out_dir: str) -> str:
    """Where `run_locally` under `out_dir` pushes: a TF Serving model base path."""
    return os.path.join(out_dir, "serving", "dspnet")


def run_locally(data_root: str, out_dir: str, **kwargs: Any) -> str:
    """Runs the pipeline with LocalDagRunner under `out_dir`; returns Pusher's base directory.

    `kwargs` are `create_pipeline`'s (e.g. `on_drift`, `scene_drift_threshold`,
    `item_drift_threshold`, `range_config`, `model_config`).
    """
    serving_dir = local_serving_dir(out_dir)
    pipeline = create_pipeline(
        pipeline_name=kwargs.pop("pipeline_name", "dspnet"),
        pipeline_root=os.path.join(out_dir, "pipeline_root"),
        data_root=data_root,
        serving_model_dir=serving_dir,
        metadata_path=os.path.join(out_dir, "metadata.sqlite"),
        **kwargs,
    )
    tfx.orchestration.LocalDagRunner().run(pipeline)
    return serving_dir


def compile_for_kubeflow(output_file: str, image: str, data_root: str, pipeline_root: str,
                         serving_model_dir: str, **kwargs: Any) -> str:
    """Compiles the pipeline for Kubeflow Pipelines v2 (Vertex AI Pipelines) to JSON or YAML.

    The components run in `image` (see the Dockerfile), with paths the cluster can reach
    (e.g. gs:// or a mounted volume). `kwargs` are `create_pipeline`'s (e.g. `on_drift`).
    """
    import json  # pylint: disable=import-outside-toplevel

    pipeline = create_pipeline(
        pipeline_name=kwargs.pop("pipeline_name", "dspnet"),
        pipeline_root=pipeline_root,
        data_root=data_root,
        serving_model_dir=serving_model_dir,
        metadata_path=None,
        **kwargs,
    )
    json_file = output_file if output_file.endswith(".json") else output_file + ".json.tmp"
    runner = tfx.orchestration.experimental.KubeflowV2DagRunner(
        config=tfx.orchestration.experimental.KubeflowV2DagRunnerConfig(default_image=image),
        output_dir=os.path.dirname(os.path.abspath(json_file)),
        output_filename=os.path.basename(json_file),
    )
    runner.run(pipeline, write_out=True)
    if json_file != output_file:
        import yaml  # pylint: disable=import-outside-toplevel

        with open(json_file, encoding="utf-8") as handle:
            spec = json.load(handle)
        with open(output_file, "w", encoding="utf-8") as handle:
            yaml.safe_dump(spec, handle, sort_keys=False)
        os.remove(json_file)
    return output_file
