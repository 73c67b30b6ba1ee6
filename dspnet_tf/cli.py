"""The `dspnet` command line: one entry point, one subcommand per job.

User mistakes (bad paths, bad values) end with a one-line `error: ...` and exit code 2;
anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence

SCENE_NAMES = ("feed", "search", "live", "favorites", "cart", "messages")
# config.PRECISIONS, spelled out so `--help` does not import TensorFlow (a test keeps the two
# equal).
PRECISION_CHOICES = ("auto", "float32", "mixed_bfloat16", "mixed_float16")


class UserError(Exception):
    """A problem with the user's input: printed as one line, exit code 2."""


def _stage(message: str) -> None:
    print(f"==> {message}", flush=True)


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from err
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def _toy_data(name: str, users: int, seed: int):
    from dspnet_tf.data import toy  # pylint: disable=import-outside-toplevel

    if name == "scene-driven":
        return toy.scene_driven(users=users, num_items=64, num_scenes=len(SCENE_NAMES), seed=seed)
    if name == "transitions":
        return toy.deterministic_transitions(users=users, num_scenes=len(SCENE_NAMES), seed=seed)
    raise UserError(f"unknown dataset {name!r}; choose scene-driven or transitions")


def _train_toy(args: argparse.Namespace):
    """Trains DSPnet on a built-in toy world; returns (model, data, test split, metrics)."""
    import tensorflow as tf  # pylint: disable=import-outside-toplevel

    from dspnet_tf import DSPnet, DSPnetConfig  # pylint: disable=import-outside-toplevel
    from dspnet_tf.data import make_dataset, repeat_target_share  # pylint: disable=import-outside-toplevel
    from dspnet_tf.evaluation import evaluate_last_events  # pylint: disable=import-outside-toplevel

    data = _toy_data(args.dataset, args.users, args.seed)
    split = int(0.8 * len(data.items))
    train = (data.items[:split], data.scenes[:split])
    test = (data.items[split:], data.scenes[split:])
    config = DSPnetConfig(
        item_vocab_size=data.item_vocab_size,
        scene_vocab_size=data.scene_vocab_size,
        max_len=args.max_len,
        item_dim=32,
        scene_dim=8,
        dropout=0.1,
        item_loss=args.item_loss,
        precision=args.precision,
        training_repeat_share=repeat_target_share(train[0]),
        seed=args.seed,
    )
    tf.keras.utils.set_random_seed(args.seed)
    from dspnet_tf.distribution import strategy_scope  # pylint: disable=import-outside-toplevel

    try:
        scope = strategy_scope(getattr(args, "distribution", "default"))
    except ValueError as err:
        raise UserError(str(err)) from None
    with scope:  # variables (and both optimizers' slots) mirrored across replicas
        model = DSPnet(config)
        model.compile(optimizer=tf.keras.optimizers.Adam(args.learning_rate))
    _stage(f"training DSPnet on {len(train[0])} users of the '{args.dataset}' world "
           f"({args.epochs} epochs)")
    started = time.time()
    from dspnet_tf.resilience import has_backup, resilient_callbacks  # pylint: disable=import-outside-toplevel

    backup_dir = os.path.join(args.out, ".backup")
    if has_backup(backup_dir):
        _stage(f"resuming an interrupted run from its last epoch checkpoint in {backup_dir}")
    model.fit(make_dataset(*train, max_len=args.max_len, batch_size=128, seed=args.seed),
              epochs=args.epochs, verbose=2 if args.verbose else 0,
              callbacks=resilient_callbacks(backup_dir))
    _stage(f"trained in {time.time() - started:.0f} s; scoring {len(test[0])} held-out users")
    metrics = evaluate_last_events(model, *test, max_len=args.max_len)
    return model, data, test, metrics


def _describe(ids: Sequence[int], names: Sequence[str]) -> str:
    return ", ".join(names[i] if i < len(names) else str(i) for i in ids)


def cmd_demo(args: argparse.Namespace) -> int:
    """The whole product on the default scene world: generate the data, run the TFX pipeline,
    train baselines, serve the pushed model, query it over gRPC, write a report."""
    from dspnet_tf.demo import DemoSettings, OutDirError, prepare_out_dir, run_demo  # pylint: disable=import-outside-toplevel

    settings = DemoSettings.tiny() if args.tiny else DemoSettings()
    for field in ("users", "epochs", "seed"):
        if getattr(args, field) is not None:
            setattr(settings, field, getattr(args, field))
    try:
        # Deletes only an earlier demo run (marked by the demo), never any folder it is given.
        prepare_out_dir(args.out, overwrite=args.overwrite)
    except OutDirError as err:
        raise UserError(str(err)) from None
    run_demo(args.out, settings, say=lambda line: print(line, flush=True))
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    """Re-draws the figures and report.md of a run folder from its run.json."""
    from dspnet_tf.report import RUN_FILE, write_report  # pylint: disable=import-outside-toplevel

    if not os.path.isfile(os.path.join(args.run, RUN_FILE)):
        raise UserError(f"--run {args.run}: no {RUN_FILE} there (run `dspnet demo` first)")
    _stage(f"wrote {write_report(args.run)}")
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    """Scores an exported model on an event log: each user's last event, ranked against the whole
    catalog by the model's own `evaluate_ranking` signature (HR@10, NDCG@10)."""
    from dspnet_tf.data.event_log import EventLogError, read_event_log  # pylint: disable=import-outside-toplevel
    from dspnet_tf.data.splits import leave_one_out  # pylint: disable=import-outside-toplevel
    from dspnet_tf.evaluation.saved_model_scoring import (  # pylint: disable=import-outside-toplevel
        history_examples,
        score_examples,
    )

    if not os.path.isfile(os.path.join(args.model, "saved_model.pb")):
        raise UserError(f"--model {args.model}: no saved_model.pb (give a version folder, e.g. "
                        "out/serving/dspnet/1712345678)")
    try:
        log = read_event_log(args.data)
    except EventLogError as err:
        raise UserError(str(err)) from None
    # The benchmark's leave-one-out test split, back in raw ids for the model's own tables.
    split = leave_one_out(log)
    items = [[split.item_vocab.tokens[i] for i in seq] for seq in split.test[0]]
    scenes = [[split.scene_vocab.tokens[s] for s in seq] for seq in split.test[1]]
    _stage(f"scoring {args.model} on the last event of {len(items)} users of {args.data}")
    scores = score_examples(args.model, history_examples(items, scenes))
    result = {k: float(v.mean()) for k, v in scores.items()}
    result["users"] = len(items)
    print(json.dumps(result, indent=2))
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    """Trains on a built-in toy world and saves the SavedModel and metrics."""
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    from dspnet_tf.resilience import atomic_write, replace_directory_atomically  # pylint: disable=import-outside-toplevel

    model, _, _, metrics = _train_toy(args)
    replace_directory_atomically(str(out / "model"), model.save)
    with atomic_write(str(out / "metrics.json")) as handle:  # an earlier run's file stays whole
        json.dump(metrics, handle, indent=2)
    print(json.dumps(metrics, indent=2))
    _stage(f"saved {out / 'model'}")
    return 0


def cmd_generate(args: argparse.Namespace) -> int:
    """Generates the scene world: events.csv (the standard event log) and world.json; with
    --days N, the same world continued day by day as events/span-1 ... span-N (a span per day,
    each user's sequence going on), for the pipeline's `{SPAN}` input pattern."""
    from dspnet_tf.data.scene_world import SceneWorld, SceneWorldConfig, generate_days  # pylint: disable=import-outside-toplevel

    try:
        config = SceneWorldConfig(users=args.users, items=args.items, categories=args.categories,
                                  misalignment=args.misalignment, seed=args.seed)
    except ValueError as err:
        raise UserError(str(err)) from None
    _stage(f"simulating {config.users} users over {config.items} items "
           f"(misalignment {config.misalignment}, seed {config.seed})")
    if args.days is None:
        if args.drift_day is not None or args.drift_kind is not None:
            raise UserError("--drift-day and --drift-kind need --days (a drift happens on a day)")
        log = SceneWorld(config).generate()
        paths = log.write(args.out)
        _stage(f"wrote {log.num_events} events to {paths['events']} and the world to "
               f"{paths['world']}")
        return 0
    try:
        days_log, paths = generate_days(config, args.out, args.days, drift_day=args.drift_day,
                                        drift_kind=args.drift_kind, drift_scene=args.drift_scene)
    except ValueError as err:
        raise UserError(str(err)) from None
    _stage(f"wrote {days_log.num_events} events over {args.days} days to {paths['events']} and "
           f"the world to {paths['world']}; pipeline input: --data '{paths['pattern']}'")
    return 0


def _model_config(args: argparse.Namespace) -> Dict[str, object]:
    """--config JSON (DSPnetConfig fields + training options) overlaid with explicit flags."""
    config: Dict[str, object] = {}
    if args.config:
        try:
            with open(args.config, encoding="utf-8") as handle:
                config = json.load(handle)
        except json.JSONDecodeError as err:
            raise UserError(f"{args.config}: not valid JSON ({err})") from None
        if not isinstance(config, dict):
            raise UserError(f"{args.config}: expected a JSON object of settings")
    for key in ("epochs", "max_len", "batch_size", "item_dim", "scene_dim", "precision",
                "warm_start_epochs", "retrieval"):
        value = getattr(args, key, None)
        if value is not None:
            config[key] = value
    return config


def cmd_pipeline_run(args: argparse.Namespace) -> int:
    """Runs the TFX pipeline locally (LocalDagRunner, SQLite metadata, caching)."""
    from dspnet_tf.data.event_log import EventLogError, list_event_files  # pylint: disable=import-outside-toplevel

    from tfx_pipeline import spans  # pylint: disable=import-outside-toplevel

    try:
        if spans.has_span_spec(args.data):
            selection = spans.resolve_data(args.data, args.span)
            _stage(f"span {selection.span} of {args.data} (the history reads spans up to it)")
        elif args.span is not None:
            raise UserError(f"--span {args.span} needs a --data pattern with {{SPAN}}, e.g. "
                            "'out/events/span-{SPAN}/*'")
        else:
            list_event_files(args.data)
    except EventLogError as err:
        raise UserError(str(err)) from None
    from serving.model_manager import model_versions  # pylint: disable=import-outside-toplevel
    from tfx_pipeline.pipeline import LOCAL_BEAM_ARGS, local_serving_dir, run_locally  # pylint: disable=import-outside-toplevel

    _stage(f"running the TFX pipeline on {args.data} -> {args.out}")
    before = set(model_versions(local_serving_dir(args.out)))
    serving_dir = run_locally(args.data, args.out, model_config=_model_config(args),
                              max_events=args.max_events, skip_malformed=args.skip_malformed,
                              beam_pipeline_args=args.beam_arg or LOCAL_BEAM_ARGS,
                              ndcg_floor=args.ndcg_floor,
                              warm_start=not getattr(args, "no_warm_start", False),
                              **_span_options(args))
    after = set(model_versions(serving_dir))
    tensorboard = os.path.join(args.out, "pipeline_root", "Trainer")
    if after - before:
        _stage(f"pushed version {max(after - before)} to {serving_dir}  (TensorBoard: {tensorboard})")
    else:
        # The Evaluator blesses a model only above --ndcg-floor and not below the last blessed
        # one; a rerun with unchanged inputs takes the Pusher from the cache. Either way the
        # served model is unchanged, which a user rerunning the pipeline needs to know.
        current = f"still serving version {max(after)}" if after else "nothing to serve yet"
        _stage(f"no new model pushed ({current} in {serving_dir}): the Evaluator did not bless "
               "this run's model (below --ndcg-floor or below the last blessed model; see "
               f"{os.path.join(args.out, 'pipeline_root', 'Evaluator')}), the run came "
               "from the cache, or a killed earlier attempt had pushed this model already "
               "(the Pusher then records that version)")
    return 0


def cmd_pipeline_compile(args: argparse.Namespace) -> int:
    """Compiles the pipeline for Kubeflow Pipelines v2 to a JSON or YAML spec."""
    if not args.out.endswith((".json", ".yaml", ".yml")):
        raise UserError(f"--out {args.out}: expected a .json or .yaml file name")
    from tfx_pipeline.pipeline import compile_for_kubeflow  # pylint: disable=import-outside-toplevel

    compile_for_kubeflow(args.out, args.image, args.data, args.pipeline_root, args.serving_dir,
                         model_config=_model_config(args), max_events=args.max_events,
                         beam_pipeline_args=args.beam_arg or None,
                         warm_start=not getattr(args, "no_warm_start", False),
                         **_span_options(args))
    _stage(f"wrote {args.out}; submit it with the KFP client or Vertex AI Pipelines")
    return 0


def _span_options(args: argparse.Namespace) -> Dict[str, object]:
    """create_pipeline's span and drift keywords from the flags (only where they matter)."""
    from tfx_pipeline import spans  # pylint: disable=import-outside-toplevel

    if not spans.has_span_spec(args.data):
        return {}
    options: Dict[str, object] = {"on_drift": args.on_drift}
    for key in ("scene_drift_threshold", "item_drift_threshold"):
        if getattr(args, key) is not None:  # else tfx_pipeline.drift's calibrated default
            options[key] = getattr(args, key)
    if args.span is not None:
        options["range_config"] = spans.static_range(args.span)
    return options


def _add_pipeline_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--span", type=_positive_int,
                        help="with a --data pattern holding {SPAN} (e.g. 'out/events/span-{SPAN}/*'"
                             "): train on this span (default: the latest); the history reads "
                             "every span up to it")
    parser.add_argument("--on-drift", choices=("stop", "warn"), default="stop",
                        help="with {SPAN} data: a span whose scene or item distribution drifted "
                             "from the previous span's stops the run before Transform, or only "
                             "warns (default: %(default)s)")
    parser.add_argument("--scene-drift-threshold", type=float,
                        help="L-infinity distance of the scene distribution between consecutive "
                             "spans that counts as drift (default: tfx_pipeline.drift's, about "
                             "twice a normal day's distance on the scene world)")
    parser.add_argument("--item-drift-threshold", type=float,
                        help="Jensen-Shannon divergence of the item distribution between "
                             "consecutive spans that counts as drift (default: "
                             "tfx_pipeline.drift's)")
    parser.add_argument("--no-warm-start", action="store_true",
                        help="train every run from scratch for --epochs (default: the Trainer "
                             "starts from the latest blessed model when there is one, rows "
                             "mapped by item / scene token, for --warm-start-epochs)")
    parser.add_argument("--warm-start-epochs", type=_positive_int,
                        help="epochs of a warm-started run (default: 1)")
    parser.add_argument("--config", help="JSON file of DSPnetConfig fields and training options "
                                         "(epochs, batch_size, learning_rate, top_k, max_len)")
    parser.add_argument("--epochs", type=_positive_int, help="training epochs (default: 5)")
    parser.add_argument("--max-len", type=_positive_int, help="history length (default: 50)")
    parser.add_argument("--batch-size", type=_positive_int, help="batch size (default: 256)")
    parser.add_argument("--item-dim", type=_positive_int, help="item network width (default: 64)")
    parser.add_argument("--scene-dim", type=_positive_int, help="scene network width (default: 16)")
    _add_precision_option(parser, "on the Trainer's machine")
    parser.add_argument("--retrieval", choices=("auto", "exact", "brute_force", "scann"),
                        help="how the pushed model finds its top K: 'brute_force' (what 'auto', "
                             "the default, picks from 10,000 items) retrieves candidates with "
                             "TFRS's BruteForce index and gives the same answers as 'exact', "
                             "which scores the whole catalog; 'scann' uses TFRS's ScaNN index, "
                             "approximate and sub-linear in the catalog (1e5+ items; served by "
                             "'dspnet serve', not by the stock TF Serving binary)")
    parser.add_argument("--max-events", type=_positive_int, default=200,
                        help="events kept per user by the ExampleGen (default: %(default)s)")
    parser.add_argument("--beam-arg", action="append", metavar="ARG",
                        help="Beam pipeline argument, repeatable, e.g. "
                             "--beam-arg=--runner=DataflowRunner (default: in-memory DirectRunner)")


def cmd_benchmark_quality(args: argparse.Namespace) -> int:
    """Trains and scores models on one event log (full ranking, leave-one-out, several seeds)
    and runs the studies (ablations, prior sensitivity, misalignment sweep); writes
    results.json, results.md and PNG plots."""
    from dspnet_tf.data.event_log import EventLogError  # pylint: disable=import-outside-toplevel
    from dspnet_tf.evaluation.quality_benchmark import (  # pylint: disable=import-outside-toplevel
        default_workers,
        run_quality_benchmark,
    )

    models = _split_list(args.models)
    studies = _split_list(args.studies)
    tasks = _split_list(args.tasks)
    first = args.first_seed
    seeds = list(range(first, first + (1 if args.quick else args.seeds)))
    epochs = min(args.epochs, 2) if args.quick else args.epochs
    max_users = args.max_users if args.max_users or not args.quick else 2000
    misalignments = (0.0, 0.5, 1.0) if args.quick else (0.0, 0.25, 0.5, 0.75, 1.0)
    overrides = {k: getattr(args, k) for k in ("max_len", "item_dim", "scene_dim", "item_loss")
                 if getattr(args, k) is not None}
    if args.precision is not None:
        from dspnet_tf.config import auto_precision  # pylint: disable=import-outside-toplevel

        # "auto" resolved here, so results.json's settings name the precision every run used.
        overrides["precision"] = args.precision
        if args.precision == "auto":
            overrides["precision"] = auto_precision()
            _stage(f"precision 'auto' -> {overrides['precision']!r} on this machine")
    sweep_users = min(args.sweep_users, 1000) if args.quick else args.sweep_users
    workers = args.workers or default_workers()
    _stage(f"quality benchmark on {args.data}: {', '.join(models)} x {len(seeds)} seed(s), "
           f"up to {epochs} epochs; studies: {', '.join(studies) or 'none'}; "
           f"{workers} run(s) at a time")
    try:
        run_quality_benchmark(
            args.data, args.out, models=models, seeds=seeds, epochs=epochs,
            patience=args.patience, batch_size=args.batch_size,
            learning_rate=args.learning_rate, overrides=overrides,
            window_stride=args.window_stride, studies=studies,
            sweep_users=sweep_users, max_users=max_users, misalignments=misalignments,
            progress=lambda line: print(f"    {line}", flush=True), workers=workers,
            tasks=tasks)
    except (EventLogError, ValueError) as err:
        raise UserError(str(err)) from None
    _stage(f"wrote {os.path.join(args.out, 'results.md')}")
    with open(os.path.join(args.out, "results.md"), encoding="utf-8") as handle:
        print(handle.read())
    return 0


# quality_benchmark.MAIN_MODELS, spelled out so `--help` does not import TensorFlow (a test
# keeps the two equal).
DEFAULT_QUALITY_MODELS = ("dspnet", "sasrec", "sasrec_scene", "gru4rec", "bert4rec",
                          "most_popular", "sasrec_repeat", "gru4rec_repeat",
                          "sasrec_repeat_target", "gru4rec_repeat_target",
                          "sasrec_scene_repeat_target", "gru4rec_scene_repeat_target",
                          "scene_popular")


def _split_list(text: str) -> List[str]:
    return [] if not text.strip() else [part.strip() for part in text.split(",")]


def cmd_serve(args: argparse.Namespace) -> int:
    """Serves a model base path (`<dir>/<version>/saved_model.pb`) over TF Serving's gRPC and
    REST APIs, loading new versions as they appear, until SIGTERM or Ctrl-C."""
    import logging  # pylint: disable=import-outside-toplevel

    from serving.batching import BatchingOptions  # pylint: disable=import-outside-toplevel
    from serving.model_manager import VersionPolicy  # pylint: disable=import-outside-toplevel
    from serving.monitoring import read_monitoring_config  # pylint: disable=import-outside-toplevel
    from serving.prediction import RequestLimits  # pylint: disable=import-outside-toplevel
    from serving.server import (  # pylint: disable=import-outside-toplevel
        ModelServer,
        ServerOptions,
        format_address,
    )

    if not os.path.isdir(args.model_base_path):
        raise UserError(f"--model-base-path {args.model_base_path}: no such folder (expected "
                        "<dir>/<integer version>/saved_model.pb, e.g. a pipeline's "
                        "serving/dspnet)")
    try:
        VersionPolicy.parse(args.version_policy)
    except ValueError as err:
        raise UserError(str(err)) from None
    for path in (args.tls_cert, args.tls_key, args.tls_client_ca):
        if path and not os.path.isfile(path):
            raise UserError(f"{path}: no such file")
    batching, monitoring_path = None, None
    if args.batching_parameters_file and not args.enable_batching:
        raise UserError("--batching-parameters-file needs --enable-batching (as in "
                        "tensorflow_model_server)")
    for path in (args.batching_parameters_file, args.monitoring_config_file):
        if path and not os.path.isfile(path):
            raise UserError(f"{path}: no such file")
    try:
        if args.enable_batching:
            batching = (BatchingOptions.read(args.batching_parameters_file)
                        if args.batching_parameters_file else BatchingOptions())
        if args.monitoring_config_file:
            monitoring_path = read_monitoring_config(args.monitoring_config_file)
    except ValueError as err:
        raise UserError(str(err)) from None
    labels = {}
    for item in args.version_label or []:
        label, _, version = item.partition("=")
        if not label or not version.isdigit():
            raise UserError(f"--version-label {item!r}: expected LABEL=VERSION, e.g. stable=3")
        labels[label] = int(version)
    import tensorflow as tf  # pylint: disable=import-outside-toplevel

    # TF Serving's --tensorflow_{intra,inter}_op_parallelism: 0 keeps TensorFlow's default.
    if args.intra_op_threads:
        tf.config.threading.set_intra_op_parallelism_threads(args.intra_op_threads)
    if args.inter_op_threads:
        tf.config.threading.set_inter_op_parallelism_threads(args.inter_op_threads)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(message)s")
    options = ServerOptions(
        model_base_path=args.model_base_path, model_name=args.model_name, host=args.host,
        port=args.port, rest_port=None if args.rest_port == -1 else args.rest_port,
        version_policy=args.version_policy, version_labels=labels,
        poll_seconds=args.poll_seconds,
        limits=RequestLimits(max_request_bytes=args.max_request_bytes,
                             max_batch_size=args.max_batch_size, max_history=args.max_history),
        workers=args.workers, max_concurrent_rpcs=args.max_concurrent_rpcs,
        tls_cert=args.tls_cert, tls_key=args.tls_key,
        tls_client_ca=args.tls_client_ca, rest_max_connections=args.rest_max_connections,
        rest_timeout=args.rest_timeout, batching=batching, monitoring_path=monitoring_path)
    try:
        server = ModelServer(options)
    except (OSError, RuntimeError, ValueError) as err:
        raise UserError(f"cannot start the server: {err}") from None
    server.start()
    print(f"serving {args.model_name!r}: gRPC {format_address(args.host, server.port)}"
          + (f", REST http{'s' if args.tls_cert else ''}://"
             f"{format_address(args.host, server.rest_port)}"
             if server.rest_port else "") + "  (Ctrl-C or SIGTERM to stop)", flush=True)
    server.serve_until_signal()
    return 0


def cmd_recommend(args: argparse.Namespace) -> int:
    """Asks a running server (ours or tensorflow_model_server) for one user's recommendations."""
    import grpc  # pylint: disable=import-outside-toplevel

    from serving.client import DSPnetClient  # pylint: disable=import-outside-toplevel

    items, scenes = _split_list(args.items), _split_list(args.scenes)
    if len(items) != len(scenes):
        raise UserError(f"--items has {len(items)} events but --scenes has {len(scenes)}; "
                        "give one scene per item")
    if args.ca_cert and not os.path.isfile(args.ca_cert):
        raise UserError(f"--ca-cert {args.ca_cert}: no such file")
    client = DSPnetClient(args.server, args.model_name, version=args.version,
                          timeout=args.timeout, root_certificates=args.ca_cert)
    try:
        answer = client.recommend(items, scenes, target_scene=args.target_scene, k=args.k)
    except grpc.RpcError as err:
        raise UserError(f"{args.server}: {err.code().name}: {err.details()}") from None
    except ValueError as err:
        raise UserError(str(err)) from None
    finally:
        client.close()
    if args.json:
        print(json.dumps({"model_version": answer.model_version,
                          "items": answer.items, "scores": answer.scores,
                          "next_scenes": dict(answer.next_scenes)}, indent=2))
        return 0
    print(f"model {args.model_name} version {answer.model_version}")
    for rank, (item, score) in enumerate(zip(answer.items, answer.scores), 1):
        print(f"  {rank:2d}. {item}  {score:.4f}")
    print("next scene: " + ", ".join(f"{s} {p:.2f}" for s, p in answer.next_scenes))
    return 0


def _add_precision_option(parser: argparse.ArgumentParser, where: str) -> None:
    parser.add_argument("--precision", choices=PRECISION_CHOICES,
                        help="Keras mixed-precision policy of every layer (DSPnetConfig."
                             "precision): float32, mixed_bfloat16 or mixed_float16 (16-bit "
                             "compute, float32 variables, logits and losses), or auto: "
                             "mixed_bfloat16 where the CPU has bfloat16 matmuls (decided "
                             f"{where}), else float32 (default: float32)")


def _add_toy_training_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dataset", default="scene-driven",
                        choices=("scene-driven", "transitions"),
                        help="built-in toy world (default: %(default)s)")
    parser.add_argument("--users", type=_positive_int, default=3000,
                        help="simulated users, 80%% train / 20%% held out (default: %(default)s)")
    parser.add_argument("--epochs", type=_positive_int, default=15,
                        help="training epochs (default: %(default)s)")
    parser.add_argument("--max-len", type=_positive_int, default=20,
                        help="history length the model reads (default: %(default)s)")
    parser.add_argument("--learning-rate", type=float, default=3e-3,
                        help="Adam learning rate (default: %(default)s)")
    parser.add_argument("--item-loss", default="auto",
                        choices=("auto", "softmax", "sampled_softmax", "sampled_bce"),
                        help="next-item loss; auto: the full softmax where its training logits "
                             "fit 1 GiB, else the sampled softmax with the logQ correction "
                             "(DSPnetConfig.item_loss; default: %(default)s)")
    _add_precision_option(parser, "on this machine")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default: %(default)s)")
    parser.add_argument("--verbose", action="store_true", help="print per-epoch training logs")


def build_parser() -> argparse.ArgumentParser:
    """The `dspnet` argument parser: one subcommand per workflow (train, demo, serve, ...)."""
    parser = argparse.ArgumentParser(
        prog="dspnet",
        description="DSPnet-TF: scene-aware sequential recommendation (arXiv 2509.26172).",
    )
    from dspnet_tf import __version__  # pylint: disable=import-outside-toplevel

    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    demo = sub.add_parser("demo", help="the whole product end to end on the default scene "
                                        "world (pipeline, server, report)",
                          description=cmd_demo.__doc__)
    demo.add_argument("--out", default="demo-out", help="output folder (default: %(default)s)")
    demo.add_argument("--users", type=_positive_int,
                      help="scene-world users (default: 10000; --tiny: 200)")
    demo.add_argument("--epochs", type=_positive_int,
                      help="Trainer epochs (default: 5; --tiny: 1)")
    demo.add_argument("--seed", type=int, help="world seed (default: 0)")
    demo.add_argument("--tiny", action="store_true",
                      help="a tiny world and model: the whole flow in about two minutes")
    demo.add_argument("--overwrite", action="store_true",
                      help="replace an earlier `dspnet demo` run in --out (a folder without "
                           "its .dspnet-demo-run mark is never deleted)")
    demo.set_defaults(func=cmd_demo)

    report = sub.add_parser("report", help="re-draw a run's report from its saved numbers",
                            description=cmd_report.__doc__)
    report.add_argument("--run", default="demo-out",
                        help="run folder with run.json (default: %(default)s)")
    report.set_defaults(func=cmd_report)

    evaluate = sub.add_parser("evaluate", help="score an exported model on an event log",
                              description=cmd_evaluate.__doc__)
    evaluate.add_argument("--model", required=True,
                          help="SavedModel version folder (e.g. out/serving/dspnet/<version>)")
    evaluate.add_argument("--data", required=True, help="event log: CSV/Parquet file or folder")
    evaluate.set_defaults(func=cmd_evaluate)

    generate = sub.add_parser("generate", help="generate synthetic data",
                              description="Generate synthetic data sets.")
    worlds = generate.add_subparsers(dest="world", metavar="WORLD")
    worlds.required = True
    world = worlds.add_parser("scene-world", help="the scene-world simulator (evaluation.md)",
                              description=cmd_generate.__doc__)
    world.add_argument("--users", type=_positive_int, default=10_000,
                       help="simulated users (default: %(default)s)")
    world.add_argument("--items", type=_positive_int, default=2_000,
                       help="catalog size (default: %(default)s)")
    world.add_argument("--categories", type=_positive_int, default=20,
                       help="latent interest categories (default: %(default)s)")
    world.add_argument("--misalignment", type=float, default=0.0,
                       help="0..1; at 1 the logged scene says nothing about the item "
                            "(default: %(default)s)")
    world.add_argument("--seed", type=int, default=0, help="random seed (default: %(default)s)")
    world.add_argument("--days", type=_positive_int,
                       help="continue the world for N days, written as events/span-1 ... span-N "
                            "(default: one events.csv)")
    world.add_argument("--drift-day", type=_positive_int,
                       help="with --days: the day (>= 2) from which the world drifts")
    world.add_argument("--drift-kind", choices=("scene_gone", "new_scene", "popularity_shift",
                                                "new_items"),
                       help="with --drift-day: a scene stops being visited, a scene appears, "
                            "item popularity is dealt again, or new popular items launch")
    world.add_argument("--drift-scene", default="live",
                       help="the scene of scene_gone / new_scene (default: %(default)s)")
    world.add_argument("--out", required=True, help="output folder for events.csv and world.json")
    world.set_defaults(func=cmd_generate)

    pipeline = sub.add_parser("pipeline", help="run or compile the TFX pipeline",
                              description="The TFX pipeline: ExampleGen -> ... -> Pusher.")
    pipeline_sub = pipeline.add_subparsers(dest="pipeline_command", metavar="ACTION")
    pipeline_sub.required = True
    run = pipeline_sub.add_parser("run", help="run locally with LocalDagRunner",
                                  description=cmd_pipeline_run.__doc__)
    run.add_argument("--data", required=True,
                     help="event log: CSV/Parquet file or folder, or a daily-span pattern such as "
                          "'out/events/span-{SPAN}/*'")
    run.add_argument("--out", required=True,
                     help="output folder: pipeline_root/, metadata.sqlite, serving/dspnet/<version>/")
    run.add_argument("--skip-malformed", action="store_true",
                     help="skip malformed event-log rows instead of failing")
    run.add_argument("--ndcg-floor", type=float, default=0.0,
                     help="bless (and push) only models whose eval NDCG@10 reaches this and is "
                          "not below the latest blessed model's (default: %(default)s)")
    _add_pipeline_options(run)
    run.set_defaults(func=cmd_pipeline_run)
    compile_ = pipeline_sub.add_parser("compile", help="compile for Kubeflow Pipelines v2",
                                       description=cmd_pipeline_compile.__doc__)
    compile_.add_argument("--out", required=True, help="pipeline.json or pipeline.yaml")
    compile_.add_argument("--image", required=True, help="container image with this package "
                                                         "(built from the Dockerfile)")
    compile_.add_argument("--data", default="gs://YOUR_BUCKET/events",
                          help="event log path the cluster can read (default: %(default)s)")
    compile_.add_argument("--pipeline-root", default="gs://YOUR_BUCKET/pipeline_root",
                          help="pipeline root the cluster can write (default: %(default)s)")
    compile_.add_argument("--serving-dir", default="gs://YOUR_BUCKET/serving/dspnet",
                          help="Pusher base directory (default: %(default)s)")
    _add_pipeline_options(compile_)
    compile_.set_defaults(func=cmd_pipeline_compile)

    benchmark = sub.add_parser("benchmark", help="measure quality (and, later, speed and scale)",
                               description="Benchmarks that print and save their numbers.")
    bench_sub = benchmark.add_subparsers(dest="benchmark_command", metavar="BENCHMARK")
    bench_sub.required = True
    quality = bench_sub.add_parser("quality", help="the model-quality table",
                                   description=cmd_benchmark_quality.__doc__)
    quality.add_argument("--data", required=True,
                         help="event log file/folder, or `movielens-100k` (the copy in the "
                              "recbole wheel); a `dspnet generate scene-world` folder also gets "
                              "the oracle row and allows the misalignment sweep")
    quality.add_argument("--models", default=",".join(DEFAULT_QUALITY_MODELS),
                         help="comma-separated main-table models: dspnet, the classic baselines "
                              "(sasrec, sasrec_scene, gru4rec, bert4rec, most_popular), the fair "
                              "ones (sasrec_repeat, gru4rec_repeat: DSPnet's repeat pointer; "
                              "sasrec_repeat_target, gru4rec_repeat_target, "
                              "sasrec_scene_repeat_target, gru4rec_scene_repeat_target: also the target "
                              "scene at the output; "
                              "scene_popular: most popular within the target scene), "
                              "gru4rec_scene and dspnet_<ablation>; '' for none "
                              "(default: %(default)s)")
    quality.add_argument("--tasks", default="next_event,in_scene",
                         help="comma-separated tasks to report: next_event (the model sees the "
                              "history only) and in_scene (it is also told the scene of the "
                              "event to predict, as every served request is) "
                              "(default: %(default)s)")
    quality.add_argument("--studies", default="ablations,prior,misalignment",
                         help="comma-separated studies run with the first seed: ablations, "
                              "prior, misalignment; '' for none (default: %(default)s)")
    quality.add_argument("--seeds", type=_positive_int, default=3,
                         help="number of seeds of the main table (default: %(default)s)")
    quality.add_argument("--first-seed", type=int, default=0,
                         help="seeds are first-seed .. first-seed + seeds - 1; e.g. --seeds 1 "
                              "--first-seed 2 adds seed 2 to an earlier run (default: "
                              "%(default)s)")
    quality.add_argument("--patience", type=_positive_int, default=3,
                         help="epochs without a validation gain before stopping (default: %(default)s)")
    quality.add_argument("--learning-rate", type=float, default=1e-3,
                         help="Adam learning rate (default: %(default)s)")
    quality.add_argument("--quick", action="store_true",
                         help="a smoke run of the whole benchmark in a few minutes: one seed, "
                              "at most 2 epochs, the first 2,000 users, a 3-point sweep of "
                              "1,000-user worlds")
    quality.add_argument("--epochs", type=_positive_int, default=15,
                         help="most epochs per run; runs stop earlier after --patience epochs "
                              "without a validation gain. On the default world every model's "
                              "validation NDCG@10 is within about 2%% of its plateau by 15 "
                              "(default: %(default)s)")
    quality.add_argument("--batch-size", type=_positive_int, default=256,
                         help="batch size (default: %(default)s)")
    quality.add_argument("--sweep-users", type=_positive_int, default=2000,
                         help="users per misalignment-sweep world; the other knobs are --data's "
                              "world's (default: %(default)s)")
    quality.add_argument("--max-len", type=_positive_int, help="history length (default: 50)")
    quality.add_argument("--item-dim", type=_positive_int, help="item width (default: 64)")
    quality.add_argument("--scene-dim", type=_positive_int, help="scene width (default: 16)")
    quality.add_argument("--item-loss", default="auto",
                         choices=("auto", "softmax", "sampled_softmax", "sampled_bce"),
                         help="item loss of every model but BERT4Rec (which keeps its sampled "
                              "softmax): auto (DSPnetConfig's default: the full softmax where "
                              "its training logits fit 1 GiB, as on the scene world and "
                              "MovieLens, else the sampled softmax), softmax, sampled_softmax "
                              "(shared negatives, logQ correction) or sampled_bce (one sampled "
                              "negative, SASRec's paper; every model learns several times "
                              "slower) (default: %(default)s)")
    _add_precision_option(quality, "on this machine, once for every run")
    quality.add_argument("--max-users", type=_positive_int,
                         help="benchmark only the first N users (sorted ids) of --data")
    quality.add_argument("--window-stride", type=_positive_int,
                         help="stride of the training windows cut from histories longer than "
                              "--max-len; smaller = overlapping windows, more updates per epoch "
                              "(default: max-len - 1, every event a target once)")
    quality.add_argument("--workers", type=_positive_int,
                         help="runs trained at once, each in its own process with its share of "
                              "the cores as TensorFlow threads; results do not depend on it. "
                              "Use 1 to time models against each other: runs that share the "
                              "machine report longer seconds per epoch (default: one per core, "
                              "at most 4)")
    quality.add_argument("--out", required=True, help="output folder")
    quality.set_defaults(func=cmd_benchmark_quality)

    serve = sub.add_parser("serve", help="serve a model over TF Serving's gRPC and REST APIs",
                           description=cmd_serve.__doc__)
    serve.add_argument("--model-base-path", required=True,
                       help="folder of version subfolders, e.g. <pipeline out>/serving/dspnet")
    serve.add_argument("--model-name", default="dspnet",
                       help="name clients ask for (default: %(default)s)")
    serve.add_argument("--host", default="127.0.0.1",
                       help="interface to bind; use 0.0.0.0 only behind a firewall "
                            "(default: %(default)s)")
    serve.add_argument("--port", type=int, default=8500, help="gRPC port (default: %(default)s)")
    serve.add_argument("--rest-port", type=int, default=8501,
                       help="REST port; -1 turns REST off (default: %(default)s)")
    serve.add_argument("--version-policy", default="latest",
                       help="latest, latest:N, all or specific:V1,V2 (default: %(default)s)")
    serve.add_argument("--version-label", action="append", metavar="LABEL=VERSION",
                       help="name a version for model_spec.version_label, repeatable")
    serve.add_argument("--poll-seconds", type=float, default=2.0,
                       help="how often to look for new versions (default: %(default)s)")
    serve.add_argument("--max-batch-size", type=_positive_int, default=1024,
                       help="rows per request (default: %(default)s)")
    serve.add_argument("--max-history", type=_positive_int, default=2048,
                       help="events per dense history (default: %(default)s)")
    serve.add_argument("--max-request-bytes", type=_positive_int, default=4 * 1024 * 1024,
                       help="bytes per request (default: %(default)s)")
    serve.add_argument("--workers", type=_positive_int, default=8,
                       help="gRPC worker threads (default: %(default)s)")
    serve.add_argument("--intra-op-threads", type=int, default=0,
                       help="threads per TensorFlow op (0: TensorFlow's default, all cores)")
    serve.add_argument("--inter-op-threads", type=int, default=0,
                       help="ops run in parallel (0: TensorFlow's default)")
    serve.add_argument("--rest-max-connections", type=_positive_int, default=64,
                       help="open REST connections at most, one thread each; more are refused "
                            "with 503 at once (default: %(default)s)")
    serve.add_argument("--rest-timeout", type=float, default=10.0,
                       help="seconds a REST read may wait (idle keep-alive, slow headers or "
                            "body, TLS handshake) before the connection is dropped "
                            "(default: %(default)s)")
    serve.add_argument("--max-concurrent-rpcs", type=_positive_int, default=256,
                       help="gRPC calls in progress at most (queued or running); more get "
                            "RESOURCE_EXHAUSTED at once (default: %(default)s)")
    serve.add_argument("--enable-batching", action="store_true",
                       help="merge concurrent requests for the same version and signature into "
                            "one model call (tensorflow_model_server's --enable_batching)")
    serve.add_argument("--batching-parameters-file", metavar="FILE",
                       help="TF Serving BatchingParameters text proto (max_batch_size, "
                            "batch_timeout_micros, max_enqueued_batches, num_batch_threads, "
                            "allowed_batch_sizes, pad_variable_length_inputs); e.g. "
                            "serving/deploy/batching_parameters.txt. Default: TF Serving's "
                            "defaults")
    serve.add_argument("--monitoring-config-file", metavar="FILE",
                       help="TF Serving MonitoringConfig text proto; with prometheus_config "
                            "{ enable: true } the Prometheus metrics are served on the REST port "
                            "at its path (default /monitoring/prometheus/metrics)")
    serve.add_argument("--tls-cert", help="PEM server certificate (with --tls-key: TLS on)")
    serve.add_argument("--tls-key", help="PEM private key of --tls-cert")
    serve.add_argument("--tls-client-ca", help="PEM CA; clients must present a certificate "
                                               "it signed")
    serve.add_argument("--verbose", action="store_true", help="log every request")
    serve.set_defaults(func=cmd_serve)

    recommend = sub.add_parser("recommend", help="query a running server for one user",
                               description=cmd_recommend.__doc__)
    recommend.add_argument("--server", default="127.0.0.1:8500",
                           help="gRPC HOST:PORT (default: %(default)s)")
    recommend.add_argument("--items", required=True,
                           help="the user's item ids, comma-separated, oldest first ('' = none)")
    recommend.add_argument("--scenes", required=True,
                           help="the scene of each item, comma-separated, e.g. feed,search,live")
    recommend.add_argument("--target-scene", help="the scene the list will be shown in")
    recommend.add_argument("--k", type=_positive_int, help="how many items (default: all the "
                                                           "model returns)")
    recommend.add_argument("--model-name", default="dspnet",
                           help="served model name (default: %(default)s)")
    recommend.add_argument("--version", type=_positive_int,
                           help="model version (default: the newest served)")
    recommend.add_argument("--timeout", type=float, default=10.0,
                           help="seconds (default: %(default)s)")
    recommend.add_argument("--ca-cert", help="PEM CA of the server's certificate (TLS)")
    recommend.add_argument("--json", action="store_true", help="print JSON")
    recommend.set_defaults(func=cmd_recommend)

    train = sub.add_parser("train", help="train DSPnet and save a SavedModel",
                           description=cmd_train.__doc__)
    _add_toy_training_options(train)
    train.add_argument("--distribution", choices=("default", "mirrored", "multi_worker"),
                       default="default",
                       help="tf.distribute strategy: one device, MirroredStrategy over local "
                            "devices, or MultiWorkerMirroredStrategy with the cluster from "
                            "TF_CONFIG (default: %(default)s)")
    train.add_argument("--out", required=True, help="output folder for model/ and metrics.json")
    train.set_defaults(func=cmd_train)
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    """Runs the `dspnet` command line; returns the exit status (2 for a user error).

    Keras 2 is selected and TensorFlow's Python warnings are silenced before the command runs;
    a `UserError` or `OSError` becomes one `dspnet COMMAND: error: ...` line on stderr.
    """
    from dspnet_tf._keras_env import ensure_legacy_keras  # pylint: disable=import-outside-toplevel

    ensure_legacy_keras()
    import warnings  # pylint: disable=import-outside-toplevel

    # Dependency deprecation notices (google-cloud's Python-version and storage-version
    # FutureWarnings) say nothing a CLI user can act on.
    warnings.filterwarnings("ignore", category=FutureWarning)
    import tensorflow as tf  # pylint: disable=import-outside-toplevel

    # Keep the console for our own progress lines: TF's Python-side warnings (e.g. about
    # training-only layers it skips when saving) are not actionable for a CLI user.
    tf.get_logger().setLevel("ERROR")
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except UserError as err:
        print(f"dspnet {args.command}: error: {err}", file=sys.stderr)
        return 2
    except OSError as err:
        print(f"dspnet {args.command}: error: {err.strerror}: {err.filename}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
