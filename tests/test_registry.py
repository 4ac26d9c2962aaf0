"""components.common.registry: the serving layout at a local or gs:// model base."""

import json
import os

import pytest

from components.common import registry, storage
from components.common.errors import RegistryError, StorageError


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

    from components.common import registry as reg

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
