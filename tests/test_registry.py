"""kfp_ct.components.common.registry: the serving layout at a local or gs:// model base."""

import json
import os

import pytest

from kfp_ct.components.common import registry, storage
from kfp_ct.components.common.errors import RegistryError, StorageError


@pytest.fixture(params=["local", "gcs"])
def base(request, tmp_path):
    """A model base that does not exist yet: local dir or a path in a new bucket."""
    if request.param == "local":
        return str(tmp_path / "serving" / "penguins")
    return storage.join(request.getfixturevalue("gcs_emulator").new_bucket(), "serving/penguins")


def fake_model(tmp_path, tag="m"):
    """A tiny directory shaped like a SavedModel (dummy bytes, no TensorFlow)."""
    d = tmp_path / f"model-{tag}"
    (d / "variables").mkdir(parents=True)
    (d / "assets").mkdir()
    (d / "saved_model.pb").write_bytes(f"pb-{tag}".encode())
    (d / "variables" / "variables.index").write_bytes(b"index")
    (d / "assets" / "vocab.txt").write_text("x\n")
    return str(d)


def test_missing_base_has_no_versions_and_no_production(base):
    assert registry.list_versions(base) == []
    assert registry.production(base) is None
    assert "No model versions" in registry.describe(base)


def test_publish_twice_gives_versions_1_and_2(base, tmp_path):
    v1 = registry.publish(base, fake_model(tmp_path, "a"), {"metrics": {"accuracy": 0.91}})
    v2 = registry.publish(
        base, fake_model(tmp_path, "b"), {"metrics": {"accuracy": 0.95}},
        extra_files={"schema.pbtxt": b"feature {}", "problem.json": b"{}"},
    )
    assert (v1.version, v2.version) == (1, 2)
    assert v2.path == storage.join(base, "2")
    versions = registry.list_versions(base)
    assert [v.version for v in versions] == [1, 2]
    assert all(v.state == "complete" for v in versions)
    meta = versions[1].metadata
    assert meta["version"] == 2 and meta["metrics"] == {"accuracy": 0.95}
    assert meta["pushed_at"].endswith("+00:00")
    assert storage.read_bytes(storage.join(base, "2", "saved_model.pb")) == b"pb-b"
    assert storage.read_bytes(storage.join(base, "2", "kfp_ct", "schema.pbtxt")) == b"feature {}"
    assert storage.exists(storage.join(base, "2", "variables", "variables.index"))
    prod = registry.production(base)
    assert prod.version == 2 and prod.state == "complete"


def test_publish_leaves_no_temp_dirs_locally(tmp_path):
    base = str(tmp_path / "b")
    registry.publish(base, fake_model(tmp_path), {})
    assert os.listdir(base) == ["1"]


def test_incomplete_version_skipped_for_production_but_number_not_reused(base, tmp_path):
    registry.publish(base, fake_model(tmp_path, "a"), {})
    # an aborted push: version 2 has files but no saved_model.pb
    storage.write_bytes(storage.join(base, "2", "variables", "variables.index"), b"partial")
    versions = registry.list_versions(base)
    assert [(v.version, v.state) for v in versions] == [(1, "complete"), (2, "incomplete")]
    assert "saved_model.pb" in versions[1].detail
    assert registry.production(base).version == 1
    v3 = registry.publish(base, fake_model(tmp_path, "c"), {})
    assert v3.version == 3
    assert registry.production(base).version == 3


def test_corrupt_version_reported_with_detail(base, tmp_path):
    registry.publish(base, fake_model(tmp_path, "a"), {})
    storage.write_bytes(storage.join(base, "2", "saved_model.pb"), b"pb")  # no metadata
    storage.write_bytes(storage.join(base, "3", "saved_model.pb"), b"pb")
    storage.write_text(storage.join(base, "3", "kfp_ct", "metadata.json"), "{not json")
    by_version = {v.version: v for v in registry.list_versions(base)}
    assert by_version[2].state == "corrupt"
    assert "metadata.json is missing" in by_version[2].detail
    assert by_version[3].state == "corrupt"
    assert "does not parse" in by_version[3].detail
    prod = registry.production(base)  # returned even though corrupt
    assert prod.version == 3 and prod.state == "corrupt"
    table = registry.describe(base)
    assert "corrupt" in table and "does not parse" in table


def test_non_numeric_names_are_ignored(base, tmp_path):
    registry.publish(base, fake_model(tmp_path), {})
    storage.write_text(storage.join(base, "README.txt"), "hi")
    storage.write_text(storage.join(base, "v7", "saved_model.pb"), "x")
    assert [v.version for v in registry.list_versions(base)] == [1]


def test_rollback_creates_new_highest_version(base, tmp_path):
    registry.publish(base, fake_model(tmp_path, "a"), {"metrics": {"accuracy": 0.9}},
                     extra_files={"statistics.pb": b"stats-a"})
    registry.publish(base, fake_model(tmp_path, "b"), {"metrics": {"accuracy": 0.5}})
    rb = registry.rollback(base, 1, reason="v2 regressed on live traffic")
    assert rb.version == 3
    prod = registry.production(base)
    assert prod.version == 3 and prod.state == "complete"
    assert prod.metadata["rollback_of"] == 1
    assert prod.metadata["rollback_reason"] == "v2 regressed on live traffic"
    assert prod.metadata["version"] == 3
    assert prod.metadata["metrics"] == {"accuracy": 0.9}
    assert storage.read_bytes(storage.join(base, "3", "saved_model.pb")) == b"pb-a"
    # audit files of the rolled-back-to version travel with it (drift check needs them)
    assert storage.read_bytes(storage.join(base, "3", "kfp_ct", "statistics.pb")) == b"stats-a"
    table = registry.describe(base)
    row3 = [line for line in table.splitlines() if line.lstrip("* ").startswith("3 ")][0]
    assert row3.startswith("*") and "accuracy=0.9" in row3 and row3.split()[-1] == "1"


def test_rollback_to_incomplete_version_refused(base, tmp_path):
    registry.publish(base, fake_model(tmp_path), {})
    storage.write_text(storage.join(base, "2", "variables", "x"), "partial")
    with pytest.raises(RegistryError, match="incomplete"):
        registry.rollback(base, 2)
    with pytest.raises(RegistryError, match="no such version"):
        registry.rollback(base, 9)
    assert [v.version for v in registry.list_versions(base)] == [1, 2]


def test_publish_to_path_under_regular_file_names_it(tmp_path):
    blocker = tmp_path / "afile"
    blocker.write_text("x")
    dest = str(blocker / "models")
    with pytest.raises(StorageError, match="afile/models"):
        registry.publish(dest, fake_model(tmp_path), {})


def test_publish_to_missing_bucket_names_it(gcs_emulator, tmp_path):
    dest = "gs://no-such-bucket-kfpct/models"
    with pytest.raises(StorageError, match="gs://no-such-bucket-kfpct/models"):
        registry.publish(dest, fake_model(tmp_path), {})


def test_publish_refuses_dir_without_saved_model(base, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(RegistryError, match="saved_model.pb"):
        registry.publish(base, str(empty), {})
    assert registry.list_versions(base) == []


def test_local_publish_retries_when_version_appears_meanwhile(tmp_path, monkeypatch):
    base = str(tmp_path / "b")
    registry.publish(base, fake_model(tmp_path), {})
    real_rename = os.rename

    def racing_rename(src, dst):
        if dst == os.path.join(base, "2") and not os.path.exists(dst):
            os.makedirs(os.path.join(dst, "other-writer"))  # someone else took 2
        return real_rename(src, dst)

    monkeypatch.setattr(registry.os, "rename", racing_rename)
    info = registry.publish(base, fake_model(tmp_path, "new"), {})
    assert info.version == 3
    meta = json.loads(storage.read_text(os.path.join(base, "3", "kfp_ct", "metadata.json")))
    assert meta["version"] == 3
    assert sorted(os.listdir(base)) == ["1", "2", "3"]


def test_gcs_publish_uploads_saved_model_last(gcs_emulator, tmp_path, gcs_upload_order):
    base = storage.join(gcs_emulator.new_bucket(), "m")
    order = gcs_upload_order
    registry.publish(base, fake_model(tmp_path), {}, extra_files={"metrics.json": b"{}"})
    assert order[-1] == "m/1/saved_model.pb"
    assert "m/1/kfp_ct/metadata.json" in order
    assert "m/1/kfp_ct/metrics.json" in order


def test_describe_lists_every_version(base, tmp_path):
    registry.publish(base, fake_model(tmp_path), {"metrics": {"auc": 0.81234}})
    text = registry.describe(base)
    assert "VERSION" in text and "complete" in text and "auc=0.8123" in text


def test_old_staging_folder_of_a_killed_push_is_removed_by_the_next_push(tmp_path):
    import os
    import time

    from kfp_ct.components.common import registry as reg

    base = tmp_path / "base"
    model = tmp_path / "model"
    model.mkdir()
    (model / "saved_model.pb").write_bytes(b"pb")
    (base / ".tmp-old").mkdir(parents=True)
    (base / ".tmp-old" / "variables.data").write_bytes(b"x")
    (base / ".tmp-fresh").mkdir()
    hours_ago = time.time() - 2 * reg.STALE_STAGE_SECONDS
    os.utime(base / ".tmp-old", (hours_ago, hours_ago))
    info = reg.publish(str(base), str(model), {"metrics": {}})
    assert info.version == 1
    assert not (base / ".tmp-old").exists()
    assert (base / ".tmp-fresh").exists()  # may belong to a push still running


def test_versions_show_the_tasks_main_metric_not_example_count(base, tmp_path):
    # As evaluate reports them: example_count first. Push names the main metric; a
    # version pushed before it did is shown with its task's main metric too.
    registry.publish(base, fake_model(tmp_path, "a"),
                     {"metrics": {"example_count": 69, "accuracy": 0.9855}})
    registry.publish(base, fake_model(tmp_path, "b"),
                     {"metrics": {"example_count": 69, "mae": 0.4, "mse": 0.25,
                                  "rmse": 0.5}, "key_metric": "rmse"})
    table = registry.describe(base)
    assert "accuracy=0.9855" in table and "rmse=0.5" in table
    assert "example_count" not in table


# ------------------------------------------------------- loadability (real models)


@pytest.fixture(scope="module")
def real_model(tmp_path_factory):
    """A small real SavedModel with a variable: tf.saved_model.load reads its checkpoint."""
    os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
    import tensorflow as tf

    class Scale(tf.Module):
        def __init__(self):
            self.w = tf.Variable(tf.fill([256], 2.0))

        @tf.function(input_signature=[tf.TensorSpec([None], tf.float32, name="x")])
        def serve(self, x):
            return {"y": x * self.w[0]}

    path = str(tmp_path_factory.mktemp("real") / "model")
    module = Scale()
    tf.saved_model.save(module, path, signatures={"serving_default": module.serve})
    return path


def _loads(path):
    import tensorflow as tf

    with storage.local_copy(path) as local:
        try:
            tf.saved_model.load(local)
        except Exception as exc:  # what TF raises for a broken SavedModel varies
            return f"{type(exc).__name__}: {exc}"
    return ""


def _delete_variables(version_path):
    storage.remove_tree(storage.join(version_path, "variables"))


def _truncate_saved_model(version_path):
    pb = storage.join(version_path, "saved_model.pb")
    data = storage.read_bytes(pb)
    storage.write_bytes(pb, data[:len(data) // 2])


@pytest.mark.parametrize("pushed", ["with_manifest", "before_manifests"])
@pytest.mark.parametrize("damage,words", [
    (_delete_variables, "variables/ is missing"),
    (_truncate_saved_model, "saved_model.pb"),
], ids=["variables_deleted", "saved_model_truncated"])
def test_a_version_that_cannot_load_is_corrupt_not_complete(base, real_model, damage, words,
                                                            pushed):
    registry.publish(base, real_model, {"metrics": {"accuracy": 0.9}})
    v2 = registry.publish(base, real_model, {"metrics": {"accuracy": 0.95}})
    if pushed == "before_manifests":  # pushed by a kfp-ct that wrote no manifest
        for v in ("1", "2"):
            storage.remove_tree(storage.join(base, v, "kfp_ct", "manifest.json"))
    assert [v.state for v in registry.list_versions(base)] == ["complete", "complete"]
    damage(v2.path)
    assert _loads(v2.path), "the damaged copy should not load in TensorFlow"
    assert _loads(storage.join(base, "1")) == ""

    one, two = registry.list_versions(base)
    assert (one.state, two.state) == ("complete", "corrupt")
    assert words in two.detail and two.metadata["metrics"] == {"accuracy": 0.95}
    if damage is _truncate_saved_model:
        assert "truncated" in two.detail
    prod = registry.production(base)  # what TF Serving tries to serve: still version 2
    assert (prod.version, prod.state, prod.detail) == (2, "corrupt", two.detail)
    table = registry.describe(base)
    row2 = [line for line in table.splitlines() if line.lstrip("* ").startswith("2 ")][0]
    assert row2.startswith("*") and "corrupt" in row2 and words in row2
    assert "Production version 2 is corrupt" in table
    assert f"kfp-ct rollback {base} 1 --reason" in table


def test_a_real_model_pushed_before_manifests_is_complete(base, real_model):
    info = registry.publish(base, real_model, {})
    storage.remove_tree(storage.join(info.path, "kfp_ct", "manifest.json"))
    assert registry.production(base).state == "complete"
    assert registry.verify(registry.production(base)).state == "complete"


def test_publish_records_every_file_in_a_manifest(base, tmp_path):
    import hashlib

    info = registry.publish(base, fake_model(tmp_path), {"metrics": {}},
                            extra_files={"schema.pbtxt": b"feature {}"})
    manifest = json.loads(storage.read_text(
        storage.join(info.path, registry.AUDIT_DIR, registry.MANIFEST)))
    files = {e["path"]: e for e in manifest["files"]}
    assert sorted(files) == ["assets/vocab.txt", "kfp_ct/metadata.json", "kfp_ct/schema.pbtxt",
                             "saved_model.pb", "variables/variables.index"]
    for rel, entry in files.items():
        data = storage.read_bytes(storage.join(info.path, rel))
        assert (entry["size"], entry["sha256"]) == (len(data), hashlib.sha256(data).hexdigest())
    assert manifest["version"] == 1 and manifest["format"] == registry.MANIFEST_FORMAT


def test_rollback_to_a_corrupt_version_is_refused_naming_the_newest_loadable(base, tmp_path,
                                                                           run_cli):
    for tag in "abc":
        registry.publish(base, fake_model(tmp_path, tag), {})
    storage.remove_tree(storage.join(base, "3", "variables"))
    storage.write_bytes(storage.join(base, "1", "saved_model.pb"), b"p")  # truncated
    with pytest.raises(RegistryError) as info:
        registry.rollback(base, 3)
    message = str(info.value)
    assert "version 3: it is corrupt" in message and "variables/ is missing" in message
    assert "the newest loadable version is 2" in message

    code, out, err = run_cli("rollback", base, 1)
    assert code == 2 and out == ""
    assert "saved_model.pb is truncated: 1 bytes, 4 when pushed" in err
    assert "the newest loadable version is 2" in err
    assert [v.version for v in registry.list_versions(base)] == [1, 2, 3]  # nothing pushed

    code, out, _ = run_cli("versions", base)
    assert code == 0 and "corrupt" in out and "variables/ is missing" in out
    assert f"recover with: kfp-ct rollback {base} 2" in out


def test_rollback_refuses_a_file_changed_since_the_push(base, tmp_path):
    registry.publish(base, fake_model(tmp_path, "a"), {})
    registry.publish(base, fake_model(tmp_path, "b"), {})
    storage.write_bytes(storage.join(base, "1", "variables", "variables.index"), b"INDEX")
    one = registry.list_versions(base)[0]
    assert one.state == "complete"  # same size: the cheap check cannot see it
    checked = registry.verify(one)
    assert checked.state == "corrupt" and "variables/variables.index is not the file" in \
        checked.detail and "sha256" in checked.detail
    with pytest.raises(RegistryError, match="variables.index is not the file pushed"):
        registry.rollback(base, 1)
    assert [v.version for v in registry.list_versions(base)] == [1, 2]


def test_rollback_of_a_rollback_keeps_a_manifest_of_its_own(base, tmp_path):
    registry.publish(base, fake_model(tmp_path, "a"), {})
    registry.publish(base, fake_model(tmp_path, "b"), {})
    registry.rollback(base, 1, reason="bad")
    again = registry.rollback(base, 3, reason="again")
    assert registry.verify(again).state == "complete"
    manifest = json.loads(storage.read_text(
        storage.join(again.path, registry.AUDIT_DIR, registry.MANIFEST)))
    assert manifest["version"] == 4
    assert not storage.exists(storage.join(again.path, registry.AUDIT_DIR, registry.CLAIM)) \
        or storage.is_gcs(base)


# ------------------------------------------------------------ concurrent publishes


def distinct_model(tmp_path, tag):
    """A fake model whose every file says which model it is, plus a file only it has."""
    d = tmp_path / f"model-{tag}"
    (d / "variables").mkdir(parents=True)
    (d / "saved_model.pb").write_bytes(f"pb-{tag}".encode())
    (d / "variables" / "variables.index").write_bytes(f"index-{tag}".encode())
    (d / "variables" / "variables.data-00000-of-00001").write_bytes(f"data-{tag}".encode() * 50)
    (d / "assets").mkdir()
    (d / "assets" / f"only-{tag}.txt").write_text(tag)
    return str(d)


def test_concurrent_gcs_publishes_get_distinct_versions_with_unmixed_files(
        gcs_emulator, tmp_path, monkeypatch):
    import threading

    base = storage.join(gcs_emulator.new_bucket(), "serving/m")
    tags = ["a", "b", "c", "d"]
    models = {t: distinct_model(tmp_path, t) for t in tags}
    # Every push looks for the next free number before any of them writes: the race.
    barrier, seen = threading.Barrier(len(tags), timeout=60), threading.local()
    real = registry._numeric_children

    def racing(b):
        out = real(b)
        if not getattr(seen, "done", False):
            seen.done = True
            barrier.wait()
        return out

    monkeypatch.setattr(registry, "_numeric_children", racing)
    results, errors = {}, []

    def push(tag):
        try:
            results[tag] = registry.publish(base, models[tag], {"tag": tag}).version
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=push, args=(t,)) for t in tags]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors, errors
    assert sorted(results.values()) == [1, 2, 3, 4]
    for info in registry.list_versions(base):
        tag = info.metadata["tag"]
        assert info.state == "complete" and results[tag] == info.version
        files = storage.list_files(info.path)
        model_files = {r for r in files if not r.startswith("kfp_ct/")}
        assert model_files == {"saved_model.pb", "variables/variables.index",
                               "variables/variables.data-00000-of-00001",
                               f"assets/only-{tag}.txt"}
        for rel in model_files:
            with open(os.path.join(models[tag], *rel.split("/")), "rb") as fh:
                assert storage.read_bytes(storage.join(info.path, rel)) == fh.read(), rel
        assert registry.verify(info).state == "complete"


def test_gcs_publish_claims_its_number_before_uploading_anything(gcs_emulator, tmp_path,
                                                                 monkeypatch):
    from google.cloud.storage import Blob

    base = storage.join(gcs_emulator.new_bucket(), "m")
    claim = storage.join(base, "1", registry.AUDIT_DIR, registry.CLAIM)
    claimed_at_first_upload = []
    real = Blob.upload_from_filename

    def spy(self, filename, *args, **kwargs):
        if not claimed_at_first_upload:
            claimed_at_first_upload.append(storage.exists(claim))
        return real(self, filename, *args, **kwargs)

    monkeypatch.setattr(Blob, "upload_from_filename", spy)
    registry.publish(base, fake_model(tmp_path), {})
    assert claimed_at_first_upload == [True]
    record = json.loads(storage.read_text(claim))
    assert {"claimed_at", "host", "pid", "id"} <= set(record)
    # Someone else's claim on the next number: the next push takes the one after.
    assert storage.create_only(storage.join(base, "2", "kfp_ct", "CLAIM"), b"{}")
    assert registry.publish(base, fake_model(tmp_path, "x"), {}).version == 3


@pytest.mark.parametrize("interrupt", [KeyboardInterrupt, OSError])
def test_gcs_publish_interrupted_midway_leaves_an_incomplete_version_the_next_skips(
        gcs_emulator, tmp_path, monkeypatch, interrupt):
    from google.cloud.storage import Blob

    base = storage.join(gcs_emulator.new_bucket(), "m")
    registry.publish(base, fake_model(tmp_path, "a"), {})
    real, calls = Blob.upload_from_filename, []

    def dying(self, filename, *args, **kwargs):
        calls.append(self.name)
        if len(calls) == 3:
            raise interrupt("connection lost")
        return real(self, filename, *args, **kwargs)

    monkeypatch.setattr(Blob, "upload_from_filename", dying)
    with pytest.raises((KeyboardInterrupt, StorageError)):
        registry.publish(base, fake_model(tmp_path, "b"), {})
    monkeypatch.setattr(Blob, "upload_from_filename", real)

    left = storage.list_files(storage.join(base, "2"))
    assert "kfp_ct/CLAIM" in left and len(left) >= 3 and "saved_model.pb" not in left
    one, two = registry.list_versions(base)
    assert (one.state, two.state) == ("complete", "incomplete")
    assert "no saved_model.pb" in two.detail
    assert registry.production(base).version == 1
    nxt = registry.publish(base, fake_model(tmp_path, "c"), {})
    assert nxt.version == 3 and registry.production(base).version == 3
    assert storage.read_bytes(storage.join(base, "3", "saved_model.pb")) == b"pb-c"


def test_local_publish_interrupted_leaves_no_version_and_no_stage(tmp_path, monkeypatch):
    base = str(tmp_path / "b")
    registry.publish(base, fake_model(tmp_path, "a"), {})

    def dying_rename(src, dst):
        raise KeyboardInterrupt

    monkeypatch.setattr(registry.os, "rename", dying_rename)
    with pytest.raises(KeyboardInterrupt):
        registry.publish(base, fake_model(tmp_path, "b"), {})
    monkeypatch.undo()
    assert os.listdir(base) == ["1"]
    assert registry.publish(base, fake_model(tmp_path, "c"), {}).version == 2


# ----------------------------------------------------------- expected production


def test_publish_refuses_when_production_is_not_the_one_compared_with(base, tmp_path):
    with pytest.raises(registry.ProductionMovedError, match="there is none now"):
        registry.publish(base, fake_model(tmp_path, "a"), {}, expected_production=3)
    registry.publish(base, fake_model(tmp_path, "b"), {}, expected_production=None)
    with pytest.raises(registry.ProductionMovedError) as info:
        registry.publish(base, fake_model(tmp_path, "c"), {}, expected_production=None)
    assert (info.value.expected, info.value.found) == (None, 1)
    assert "compared with no production model (first push)" in str(info.value)
    assert registry.publish(base, fake_model(tmp_path, "d"), {},
                            expected_production=1).version == 2
    with pytest.raises(registry.ProductionMovedError, match="production is version 2 now"):
        registry.publish(base, fake_model(tmp_path, "e"), {}, expected_production=1)
    assert [v.version for v in registry.list_versions(base)] == [1, 2]
    assert storage.list_files(storage.join(base, "3")) == {}  # no claim, no stage left
    if not storage.is_gcs(base):
        assert sorted(os.listdir(base)) == ["1", "2"]


def test_gcs_publish_refuses_when_another_push_lands_during_its_upload(gcs_emulator, tmp_path,
                                                                     monkeypatch):
    base = storage.join(gcs_emulator.new_bucket(), "m")
    registry.publish(base, fake_model(tmp_path, "a"), {})
    real, landed = storage.upload_tree, []

    def upload_then_another_push_lands(src, dst, last=()):
        out = real(src, dst, last=last)
        if not landed:
            monkeypatch.setattr(registry.storage, "upload_tree", real)
            landed.append(registry.publish(base, fake_model(tmp_path, "other"), {}).version)
        return out

    monkeypatch.setattr(registry.storage, "upload_tree", upload_then_another_push_lands)
    with pytest.raises(registry.ProductionMovedError) as info:
        registry.publish(base, fake_model(tmp_path, "b"), {}, expected_production=1)
    assert (info.value.expected, info.value.found) == (1, 3) and landed == [3]
    # Our version 2 is gone, files and claim; the other push's version 3 serves.
    assert storage.list_files(storage.join(base, "2")) == {}
    assert [(v.version, v.state) for v in registry.list_versions(base)] == [
        (1, "complete"), (3, "complete")]


def test_local_publish_checks_production_again_under_its_lock(tmp_path, monkeypatch):
    base = str(tmp_path / "b")
    registry.publish(base, fake_model(tmp_path, "a"), {})
    real = registry._stage

    def stage_then_another_push_lands(*args):
        out = real(*args)
        monkeypatch.setattr(registry, "_stage", real)
        registry.publish(base, fake_model(tmp_path, "other"), {})
        return out

    monkeypatch.setattr(registry, "_stage", stage_then_another_push_lands)
    with pytest.raises(registry.ProductionMovedError, match="production is version 2 now"):
        registry.publish(base, fake_model(tmp_path, "b"), {}, expected_production=1)
    assert sorted(os.listdir(base)) == ["1", "2"]
    assert registry.production(base).metadata["version"] == 2


def test_a_missing_audit_file_is_reported_but_the_model_still_loads(base, tmp_path):
    registry.publish(base, fake_model(tmp_path), {},
                     extra_files={"statistics.pb": b"stats", "schema.pbtxt": b"s"})
    storage.remove_tree(storage.join(base, "1", "kfp_ct", "statistics.pb"))
    storage.write_bytes(storage.join(base, "1", "kfp_ct", "schema.pbtxt"), b"S")
    (info,) = registry.list_versions(base)
    assert info.state == "complete"
    assert info.detail == "audit record: kfp_ct/statistics.pb is missing (5 bytes when pushed)"
    checked = registry.verify(info)
    assert checked.state == "complete" and "kfp_ct/schema.pbtxt is not the file" in checked.detail


def test_a_publish_that_runs_out_of_room_is_one_line_and_leaves_nothing(tmp_path):
    """A real limit (RLIMIT_FSIZE in a child, SIGXFSZ ignored so a write past it fails
    with EFBIG), since a full file system needs root. Before: "Cannot publish to ...:
    writing .tmp-... failed ([('...variables.data...', ..., '[Errno 27] File too
    large: ...')])", shutil's list of every failed file."""
    import subprocess
    import sys

    model = fake_model(tmp_path)
    with open(os.path.join(model, "variables", "variables.data-00000-of-00001"), "wb") as fh:
        fh.write(b"\0" * (3 << 20))
    base = str(tmp_path / "serving")
    script = (
        "import resource, signal, sys\n"
        "signal.signal(signal.SIGXFSZ, signal.SIG_IGN)\n"
        "resource.setrlimit(resource.RLIMIT_FSIZE,\n"
        "                   (1 << 20, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))\n"
        "from kfp_ct.components.common import registry\n"
        "try:\n"
        "    registry.publish(sys.argv[1], sys.argv[2], {})\n"
        "except registry.StorageError as exc:\n"
        "    print(exc)\n"
        "    sys.exit(3)\n")
    proc = subprocess.run([sys.executable, "-c", script, base, model], capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 3, proc.stderr
    assert proc.stdout.startswith(f"file size limit reached writing {base}: a file may be "
                                  "at most 1.0 MB for this process (ulimit -f); need about "
                                  "3.1 MB, ")
    assert proc.stdout.count("\n") == 1 and "Errno" not in proc.stdout
    assert os.listdir(base) == []  # no version, no staging folder


def test_the_versions_a_run_published_are_found_by_its_name(base, tmp_path):
    """What a stopped run reports about pushing comes from here (issue 21)."""
    registry.publish(base, fake_model(tmp_path, "a"), {"parent_run": {"run_name": "other"}})
    registry.publish(base, fake_model(tmp_path, "b"), {"parent_run": {"run_name": "train-7"}})
    registry.publish(base, fake_model(tmp_path, "c"), {
        "parent_run": {"run_name": "retrain"},
        "trigger": {"kind": "drift", "launch": 4, "monitor_run": {"run_name": "monitor-2"}}})
    assert [v.version for v in registry.pushed_by_run(base, "train-7")] == [2]
    assert [v.version for v in registry.pushed_by_run(base, "monitor-2")] == [3]
    assert registry.pushed_by_run(base, "never-ran") == []
    assert registry.pushed_by_run(base, "") == []
    assert registry.pushed_by_launch(base, 4).version == 3
    assert registry.pushed_by_launch(base, 5) is None
