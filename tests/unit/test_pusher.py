"""tfx_pipeline.pusher: the staged, renamed, push-once executor and the latest-pushed-model
resolver, on hand-made artifacts and an in-memory ML Metadata store (no pipeline run)."""

from __future__ import annotations

import os
import time

import pytest


def _model(root, name: str, weights: bytes):
    """A Model artifact whose Format-Serving folder holds a stand-in SavedModel's files."""
    from tfx.types import standard_artifacts

    serving = root / name / "Format-Serving"
    (serving / "variables").mkdir(parents=True)
    (serving / "saved_model.pb").write_bytes(b"graph of " + name.encode())
    (serving / "variables" / "variables.index").write_bytes(b"index")
    (serving / "variables" / "variables.data-00000-of-00001").write_bytes(weights)
    model = standard_artifacts.Model()
    model.uri = str(root / name)
    return model


def _push(root, base, model, blessed: int = 1, name: str = "push"):
    """Runs AtomicPushExecutor.Do once; returns the PushedModel artifact."""
    from tfx.proto import pusher_pb2
    from tfx.types import standard_artifacts
    from tfx.utils import proto_utils

    from tfx_pipeline.pusher import AtomicPushExecutor

    blessing = standard_artifacts.ModelBlessing()
    blessing.uri = str(root / f"{name}-blessing")
    blessing.set_int_custom_property("blessed", blessed)
    pushed = standard_artifacts.PushedModel()
    pushed.uri = str(root / f"{name}-pushed")
    destination = pusher_pb2.PushDestination(
        filesystem=pusher_pb2.PushDestination.Filesystem(base_directory=str(base)))
    AtomicPushExecutor().Do({"model": [model], "model_blessing": [blessing]},
                            {"pushed_model": [pushed]},
                            {"push_destination": proto_utils.proto_to_json(destination)})
    return pushed


def test_push_renames_a_complete_copy_and_pushes_a_model_once(tmp_path):
    from tfx_pipeline.pusher import same_files

    base = tmp_path / "serving"
    first = _model(tmp_path, "m1", b"weights one")
    pushed = _push(tmp_path, base, first)
    (version,) = os.listdir(base)
    assert pushed.get_int_custom_property("pushed") == 1
    assert pushed.get_string_custom_property("pushed_version") == version
    assert pushed.get_string_custom_property("pushed_destination") == str(base / version)
    assert abs(int(version) - time.time()) < 60  # Unix time, as TFX's Pusher
    assert same_files(os.path.join(first.uri, "Format-Serving"), str(base / version))
    assert same_files(os.path.join(first.uri, "Format-Serving"), pushed.uri)  # TFX's archive

    # The rerun of a push killed after its rename: recorded, nothing copied.
    again = _push(tmp_path, base, first, name="again")
    assert os.listdir(base) == [version]
    assert again.get_string_custom_property("pushed_version") == version

    # Same file names and sizes, one byte different: a new model, a new, larger version.
    second = _push(tmp_path, base, _model(tmp_path, "m2", b"weights two"), name="second")
    new = second.get_string_custom_property("pushed_version")
    assert sorted(os.listdir(base)) == sorted([version, new]) and int(new) > int(version)

    # The first model again, now older than the newest version: pushed again so it is served.
    third = _push(tmp_path, base, first, name="third")
    assert int(third.get_string_custom_property("pushed_version")) > int(new)
    assert len(os.listdir(base)) == 3


def test_a_version_is_above_the_newest_even_if_the_clock_is_behind(tmp_path):
    base = tmp_path / "serving"
    future = str(int(time.time()) + 10_000)
    (base / future).mkdir(parents=True)  # e.g. pushed by a machine whose clock was ahead
    pushed = _push(tmp_path, base, _model(tmp_path, "m", b"w"))
    assert pushed.get_string_custom_property("pushed_version") == str(int(future) + 1)


def test_not_blessed_pushes_nothing(tmp_path):
    base = tmp_path / "serving"
    pushed = _push(tmp_path, base, _model(tmp_path, "m", b"w"), blessed=0)
    assert pushed.get_int_custom_property("pushed") == 0
    assert not base.exists() or os.listdir(base) == []


def test_staging_left_by_a_killed_push_is_removed(tmp_path):
    from tfx_pipeline.pusher import STAGING_PREFIX, STALE_SECONDS, model_key

    base = tmp_path / "serving"
    model = _model(tmp_path, "m", b"w")
    mine = base / f"{STAGING_PREFIX}{model_key(os.path.join(model.uri, 'Format-Serving'))}-dead"
    other_fresh = base / f"{STAGING_PREFIX}0123456789ab-alive"  # another model's push, now
    other_stale = base / f"{STAGING_PREFIX}ba9876543210-old"
    for folder in (mine, other_fresh, other_stale):
        (folder / "variables").mkdir(parents=True)
    old = time.time() - STALE_SECONDS - 60
    os.utime(other_stale, (old, old))
    pushed = _push(tmp_path, base, model)
    assert sorted(os.listdir(base)) == sorted(
        [pushed.get_string_custom_property("pushed_version"), other_fresh.name])


def test_a_failed_copy_leaves_no_version_and_no_staging(tmp_path, monkeypatch):
    from tfx.utils import io_utils

    base = tmp_path / "serving"
    model = _model(tmp_path, "m", b"w")

    def copy_then_fail(src, dst, *args, **kwargs):
        os.makedirs(dst)
        open(os.path.join(dst, "saved_model.pb"), "wb").close()
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(io_utils, "copy_dir", copy_then_fail)
    with pytest.raises(OSError, match="No space"):
        _push(tmp_path, base, model)
    assert os.listdir(base) == []


# -- LatestPushedModelStrategy on an in-memory ML Metadata store ------------------------------

def _store():
    from ml_metadata.metadata_store import metadata_store
    from ml_metadata.proto import metadata_store_pb2

    config = metadata_store_pb2.ConnectionConfig()
    config.fake_database.SetInParent()
    return metadata_store.MetadataStore(config)


def _record(store, models, blessings, pushes):
    """Models (and a blessing each), then `pushes`: (model index, execution state, pushed)."""
    from ml_metadata.proto import metadata_store_pb2 as pb
    from tfx.types import standard_artifacts

    def artifact_type(name):
        return store.put_artifact_type(pb.ArtifactType(name=name))

    model_type, blessing_type, pushed_type = (artifact_type(n) for n in
                                              ("Model", "ModelBlessing", "PushedModel"))
    pusher_type = store.put_execution_type(pb.ExecutionType(name="Pusher"))
    model_ids = store.put_artifacts([pb.Artifact(type_id=model_type, uri=f"/m{i}")
                                     for i in range(models)])
    tfx_models, tfx_blessings = [], []
    for model_id, blessed in zip(model_ids, blessings):
        model = standard_artifacts.Model()
        model.id = model_id
        tfx_models.append(model)
        blessing = pb.Artifact(type_id=blessing_type)
        blessing.custom_properties["blessed"].int_value = blessed
        blessing.custom_properties["current_model_id"].int_value = model_id
        [blessing.id] = store.put_artifacts([blessing])
        tfx_blessing = standard_artifacts.ModelBlessing()
        tfx_blessing.set_mlmd_artifact(blessing)
        tfx_blessings.append(tfx_blessing)
    for index, state, pushed in pushes:
        output = pb.Artifact(type_id=pushed_type)
        output.custom_properties["pushed"].int_value = pushed
        store.put_execution(
            pb.Execution(type_id=pusher_type, last_known_state=state),
            [(pb.Artifact(id=model_ids[index], type_id=model_type),
              pb.Event(type=pb.Event.INPUT)),
             (output, pb.Event(type=pb.Event.OUTPUT))], [])
    return tfx_models, tfx_blessings


@pytest.mark.parametrize("pushes, expected", [
    ([], None),                                    # nothing pushed yet: no baseline
    ([(0, "COMPLETE", 1)], 0),
    ([(0, "COMPLETE", 1), (1, "COMPLETE", 1)], 1),
    ([(0, "COMPLETE", 1), (1, "RUNNING", 1)], 0),  # killed before its push was recorded
    ([(0, "COMPLETE", 1), (2, "COMPLETE", 1)], 0),  # model 2 is not blessed
    ([(0, "CACHED", 1), (1, "COMPLETE", 0)], 0),   # model 1 not pushed
    ([(1, "FAILED", 1), (0, "COMPLETE", 1)], 0),
])
def test_latest_pushed_model_strategy(pushes, expected):
    from ml_metadata.proto import metadata_store_pb2 as pb

    from tfx_pipeline.pusher import LatestPushedModelStrategy

    store = _store()
    models, blessings = _record(store, 3, [1, 1, 0],
                                [(i, getattr(pb.Execution, s), p) for i, s, p in pushes])
    result = LatestPushedModelStrategy().resolve_artifacts(
        store, {"model": list(models), "model_blessing": list(blessings)})
    if expected is None:
        assert result == {"model": [], "model_blessing": []}
    else:
        assert [m.id for m in result["model"]] == [models[expected].id]
        assert [b.get_int_custom_property("current_model_id")
                for b in result["model_blessing"]] == [models[expected].id]
