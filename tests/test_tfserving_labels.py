"""kfp_ct.components.rollout.labels: TF Serving's model config file with canary / stable
version labels (render, parse, the moves, atomic writes; local and gs://)."""

import os

import pytest
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory, text_format

from kfp_ct.components.common import storage
from kfp_ct.components.common.errors import KfpCtError, StorageError
from kfp_ct.components.rollout import labels as L
from kfp_ct.components.rollout.labels import LabelConfig, LabelsError

NAME = "penguins"
BASE = "gs://bucket/serving/penguins"

# The file of the brief: stable on 3, canary on 4.
EXPECTED = """\
model_config_list {
  config {
    name: "penguins"
    base_path: "gs://bucket/serving/penguins"
    model_platform: "tensorflow"
    model_version_policy {
      specific {
        versions: 3
        versions: 4
      }
    }
    version_labels {
      key: "canary"
      value: 4
    }
    version_labels {
      key: "stable"
      value: 3
    }
  }
}
"""

# After the first set_canary(3): one version, both labels on it.
FIRST = """\
model_config_list {
  config {
    name: "penguins"
    base_path: "gs://bucket/serving/penguins"
    model_platform: "tensorflow"
    model_version_policy {
      specific {
        versions: 3
      }
    }
    version_labels {
      key: "canary"
      value: 3
    }
    version_labels {
      key: "stable"
      value: 3
    }
  }
}
"""


# ------------------------------------------------------------- the real message types


def _model_server_config_class():
    """tensorflow.serving.ModelServerConfig built from the field names and numbers of
    tensorflow_serving/config/model_server_config.proto and
    tensorflow_serving/config/file_system_storage_path_source.proto."""
    F = descriptor_pb2.FieldDescriptorProto
    fdp = descriptor_pb2.FileDescriptorProto(
        name="kfp_ct_test/tfserving_model_server_config.proto",
        package="tensorflow.serving", syntax="proto3")

    def field(msg, name, number, type_, label=F.LABEL_OPTIONAL, type_name="", oneof=None):
        f = msg.field.add(name=name, number=number, type=type_, label=label)
        if type_name:
            f.type_name = type_name
        if oneof is not None:
            f.oneof_index = oneof
        return f

    source = fdp.message_type.add(name="FileSystemStoragePathSourceConfig")
    policy = source.nested_type.add(name="ServableVersionPolicy")
    specific = policy.nested_type.add(name="Specific")
    field(specific, "versions", 1, F.TYPE_INT64, F.LABEL_REPEATED)
    policy.oneof_decl.add(name="policy_choice")
    field(policy, "specific", 102, F.TYPE_MESSAGE, type_name=(
        ".tensorflow.serving.FileSystemStoragePathSourceConfig.ServableVersionPolicy"
        ".Specific"), oneof=0)

    model = fdp.message_type.add(name="ModelConfig")
    field(model, "name", 1, F.TYPE_STRING)
    field(model, "base_path", 2, F.TYPE_STRING)
    field(model, "model_platform", 4, F.TYPE_STRING)
    field(model, "model_version_policy", 7, F.TYPE_MESSAGE, type_name=(
        ".tensorflow.serving.FileSystemStoragePathSourceConfig.ServableVersionPolicy"))
    entry = model.nested_type.add(name="VersionLabelsEntry")
    entry.options.map_entry = True
    field(entry, "key", 1, F.TYPE_STRING)
    field(entry, "value", 2, F.TYPE_INT64)
    field(model, "version_labels", 8, F.TYPE_MESSAGE, F.LABEL_REPEATED,
          ".tensorflow.serving.ModelConfig.VersionLabelsEntry")

    config_list = fdp.message_type.add(name="ModelConfigList")
    field(config_list, "config", 1, F.TYPE_MESSAGE, F.LABEL_REPEATED,
          ".tensorflow.serving.ModelConfig")

    server = fdp.message_type.add(name="ModelServerConfig")
    server.oneof_decl.add(name="config")
    field(server, "model_config_list", 1, F.TYPE_MESSAGE,
          type_name=".tensorflow.serving.ModelConfigList", oneof=0)

    pool = descriptor_pool.DescriptorPool()
    pool.AddSerializedFile(fdp.SerializeToString())
    return message_factory.GetMessageClass(
        pool.FindMessageTypeByName("tensorflow.serving.ModelServerConfig"))


ModelServerConfig = _model_server_config_class()


def proto_check(text: str, cfg: LabelConfig) -> None:
    """``text`` is a valid ModelServerConfig text proto that says what ``cfg`` says."""
    msg = text_format.Parse(text, ModelServerConfig())
    assert msg.WhichOneof("config") == "model_config_list"
    assert len(msg.model_config_list.config) == 1
    model = msg.model_config_list.config[0]
    assert model.name == cfg.name
    assert model.base_path == cfg.base_path
    assert model.model_platform == "tensorflow"
    assert model.model_version_policy.WhichOneof("policy_choice") == "specific"
    assert sorted(set(model.model_version_policy.specific.versions)) == list(cfg.versions)
    assert dict(model.version_labels) == cfg.labels
    # Every label is on a loaded version (TF Serving refuses anything else).
    assert set(model.version_labels.values()) <= set(model.model_version_policy.specific.versions)


# --------------------------------------------------------------------- render/parse


def test_render_is_the_documented_file():
    cfg = LabelConfig(NAME, BASE, stable=3, canary=4)
    assert L.render(cfg) == EXPECTED
    assert L.parse(EXPECTED) == cfg
    proto_check(EXPECTED, cfg)


def test_default_path():
    assert L.CONFIG_FILE == "models.config"
    assert L.default_path("gs://b/serving/") == "gs://b/serving/models.config"
    assert L.default_path("/srv/models") == os.path.join("/srv/models", "models.config")


def _moves(path):
    """The move sequence; yields (what, returned config, expected stable/canary/versions)."""
    yield "first canary", L.set_canary(path, NAME, BASE, 3), (3, 3, (3,))
    yield "next canary", L.set_canary(path, NAME, BASE, 4), (3, 4, (3, 4))
    yield "promote", L.promote(path), (4, 4, (4,))
    yield "next canary", L.set_canary(path, NAME, BASE, 5), (4, 5, (4, 5))
    yield "rollback", L.rollback(path), (4, 4, (4,))
    yield "stage", L.stage(path, 2), (4, 4, (2, 4))
    yield "move_stable", L.move_stable(path, 2), (2, 2, (2,))


def _check_moves(path):
    texts = []
    for what, cfg, (stable, canary, versions) in _moves(path):
        assert (cfg.stable, cfg.canary, cfg.versions) == (stable, canary, versions), what
        assert L.read(path) == cfg, what
        text = storage.read_text(path)
        assert text == L.render(cfg), what
        assert L.parse(text, path) == cfg, what
        proto_check(text, cfg)
        texts.append(text)
    assert texts[0] == FIRST
    assert texts[1] == EXPECTED


def test_move_sequence_local(tmp_path):
    path = L.default_path(str(tmp_path / "serving"))
    assert L.read(path) is None
    _check_moves(path)
    assert sorted(os.listdir(tmp_path / "serving")) == ["models.config"]


def test_move_sequence_gcs(gcs_emulator):
    path = L.default_path(gcs_emulator.new_bucket() + "/serving/penguins")
    assert L.read(path) is None
    _check_moves(path)


def test_set_canary_first_file_with_stable_if_new(tmp_path):
    path = str(tmp_path / "models.config")
    cfg = L.set_canary(path, NAME, BASE, 7, stable_if_new=6)
    assert (cfg.stable, cfg.canary, cfg.versions) == (6, 7, (6, 7))
    # stable_if_new only applies to a new file: stable is unchanged afterwards.
    cfg = L.set_canary(path, NAME, BASE, 8, stable_if_new=1)
    assert (cfg.stable, cfg.canary, cfg.versions) == (6, 8, (6, 8))


def test_set_canary_on_a_staged_version_unstages_it(tmp_path):
    path = str(tmp_path / "models.config")
    L.set_canary(path, NAME, BASE, 3)
    assert L.stage(path, 4).versions == (3, 4)
    assert L.stage(path, 4).versions == (3, 4)  # idempotent
    cfg = L.set_canary(path, NAME, BASE, 4)
    assert (cfg.stable, cfg.canary, cfg.staged) == (3, 4, ())
    assert L.render(cfg) == EXPECTED


def test_a_move_that_changes_nothing_does_not_rewrite(tmp_path, monkeypatch):
    path = str(tmp_path / "models.config")
    L.set_canary(path, NAME, BASE, 3)
    writes = []
    monkeypatch.setattr(L, "write", lambda p, c: writes.append(c))
    L.set_canary(path, NAME, BASE, 3)
    L.promote(path)
    L.rollback(path)
    L.move_stable(path, 3)
    assert writes == []


def test_hand_written_file_any_order_comments_both_quotes():
    text = """
    # written by hand
    model_config_list: {
      config: <
        version_labels { value: 0x4 key: 'canary' }   # hex is an int64 too
        model_version_policy: { specific { versions: [4, 3]; versions: 9 } }
        model_platform: 'tensorflow',
        base_path: "gs://bucket/" 'serving/penguins'  # adjacent strings join
        version_labels: [{key: "stable", value: 3}]
        name: 'pen\\x67uins'
      >
    }
    """
    cfg = L.parse(text)
    assert cfg == LabelConfig(NAME, BASE, stable=3, canary=4, staged=(9,))
    proto_check(text, cfg)  # protobuf reads the same file the same way
    assert L.parse(L.render(cfg)) == cfg


def test_parses_what_protobuf_writes():
    msg = ModelServerConfig()
    model = msg.model_config_list.config.add(name="m \"q\" \\ é", base_path="/srv/m",
                                              model_platform="tensorflow")
    model.model_version_policy.specific.versions.extend([10, 11])
    model.version_labels["stable"] = 10
    model.version_labels["canary"] = 11
    for as_utf8 in (False, True):
        cfg = L.parse(text_format.MessageToString(msg, as_utf8=as_utf8))
        assert cfg == LabelConfig('m "q" \\ é', "/srv/m", 10, 11)
        proto_check(L.render(cfg), cfg)


def test_render_escapes_strings():
    cfg = LabelConfig('a"b\\c\n\x01é', "/srv/with space", 1, None)
    text = L.render(cfg)
    assert L.parse(text) == cfg
    proto_check(text, cfg)


# ------------------------------------------------------------------------ refusals


def _file(body: str, labels: str = "", policy: str = "specific { versions: 3 versions: 4 }"
          ) -> str:
    return ("model_config_list {\n"
            "  config {\n"
            "    name: 'penguins'\n"
            "    base_path: '/srv/penguins'\n"
            "    model_platform: 'tensorflow'\n"
            f"    model_version_policy {{ {policy} }}\n"
            f"{labels}"
            f"{body}"
            "  }\n"
            "}\n")


OK_LABELS = ("    version_labels { key: 'stable' value: 3 }\n"
             "    version_labels { key: 'canary' value: 4 }\n")

REFUSALS = {
    "second model": (
        "model_config_list {\n config { name: 'a' base_path: '/a' }\n"
        " config { name: 'b' base_path: '/b' }\n}\n",
        3, "a second model config (the first is on line 2)"),
    "second model_config_list": (
        _file("") + "model_config_list { config { name: 'b' base_path: '/b' } }\n",
        9, "model_config_list appears twice in the file (first on line 1)"),
    "float version": (_file("", policy="specific { versions: 3.5 }"), 6,
                      "versions must be an integer version, not 3.5"),
    "string version": (_file("", policy="specific { versions: '3' }"), 6,
                       "versions must be an integer version, not '3'"),
    "word label value": (_file("    version_labels { key: 'canary' value: four }\n"), 7,
                         "version label 'canary' must be an integer version, not four"),
    "negative version": (_file("", policy="specific { versions: -3 }"), 6,
                         "versions -3 is not a version"),
    "int64 overflow": (_file("", policy="specific { versions: 9223372036854775808 }"), 6,
                       "versions 9223372036854775808 is not a version"),
    "label off the policy": (
        _file("    version_labels { key: 'canary' value: 5 }\n"), 7,
        "version label 'canary' points at version 5, which the specific version policy "
        "does not load (it lists 3, 4)"),
    "label without a policy": (
        "model_config_list { config {\n name: 'a' base_path: '/a'\n"
        " version_labels { key: 'stable' value: 1 } } }\n",
        3, "points at version 1, which the specific version policy does not load "
           "(it lists none)"),
    "no policy": ("model_config_list { config {\n name: 'a' base_path: '/a' } }\n", 1,
                  "has no model_version_policy { specific { versions: N } }"),
    "latest policy": (_file("", policy="latest { num_versions: 2 }"), 6,
                      "model_version_policy latest is not one kfp-ct manages"),
    "other label": (_file("    version_labels { key: 'beta' value: 3 }\n"), 7,
                    "version label 'beta' is not one kfp-ct manages"),
    "duplicate label": (_file("    version_labels { key: 'stable' value: 4 }\n",
                              labels=OK_LABELS), 9,
                        "version label 'stable' appears twice (first on line 7)"),
    "label without value": (_file("    version_labels { key: 'stable' }\n"), 7,
                            "version_labels has no value"),
    "duplicate name": (_file("    name: 'other'\n"), 7,
                       "name appears twice in the model config (first on line 3)"),
    "no name": ("model_config_list { config {\n base_path: '/a'\n"
                " model_version_policy { specific { versions: 1 } } } }\n", 1,
                "the model config has no name"),
    "empty base_path": ("model_config_list { config {\n name: 'a'\n base_path: ''\n"
                        " model_version_policy { specific { versions: 1 } } } }\n", 3,
                        "base_path is empty"),
    "other platform": (_file("").replace("'tensorflow'", "'tensorrt'"), 5,
                       "model_platform is 'tensorrt'"),
    "logging_config": (_file("    logging_config { }\n"), 7,
                       "field 'logging_config' in the model config is not one kfp-ct"),
    "custom_model_config": ("custom_model_config { }\n", 1,
                            "field 'custom_model_config' in the file is not one kfp-ct"),
    "no model": ("# nothing here\n", None, "no model_config_list"),
    "empty list": ("model_config_list {\n}\n", 1, "model_config_list holds no config"),
    "unterminated string": (_file("    # x\n").replace("'/srv/penguins'", "'/srv/pen"), 4,
                            "unterminated string"),
    "missing brace": (_file("")[:-2], 1,
                      "the '{' of this model_config_list is never closed (a '}' is missing)"),
    "missing value": (_file("").rstrip("}\n") + "\n name:", 8,
                      "the file ends where a value is expected"),
    "missing colon": (_file("").replace("name: 'penguins'", "name 'penguins'"), 3,
                      "expected ':' or '{' after name"),
    "name as a message": (_file("").replace("name: 'penguins'", "name { }"), 3,
                          "name in the model config must be a value"),
    "bad escape": (_file("").replace("'/srv/penguins'", r"'/srv/\q'"), 4,
                   r"bad escape \q"),
    "stray text": (_file("    versions = 3\n"), 7, "unexpected text '= 3'"),
}


@pytest.mark.parametrize("case", sorted(REFUSALS))
def test_parse_refuses(case):
    text, line, message = REFUSALS[case]
    with pytest.raises(LabelsError) as err:
        L.parse(text, "gs://b/models.config")
    where = "gs://b/models.config" + (f": line {line}: " if line else ": ")
    assert str(err.value).startswith(where), str(err.value)
    assert message in str(err.value)
    assert isinstance(err.value, KfpCtError)


def test_read_names_the_file(tmp_path):
    path = str(tmp_path / "models.config")
    with open(path, "w") as f:
        f.write(_file("", labels=OK_LABELS) + _file(""))
    with pytest.raises(LabelsError, match=f"^{path}: line 11: model_config_list appears"):
        L.read(path)


@pytest.mark.parametrize("cfg, message", [
    (LabelConfig(NAME, BASE, None, None), "has no version to load"),
    (LabelConfig(NAME, BASE, True, None), "must be an integer version, not True"),
    (LabelConfig(NAME, BASE, -1, None), "-1 is not a version"),
    (LabelConfig(NAME, BASE, 1, "2"), "must be an integer version, not '2'"),
    (LabelConfig("", BASE, 1, 1), "name must be a non-empty string"),
    (LabelConfig(NAME, None, 1, 1), "base_path must be a non-empty string"),
])
def test_render_refuses(cfg, message):
    with pytest.raises(LabelsError, match=message):
        L.render(cfg)


def test_moves_refuse(tmp_path):
    path = str(tmp_path / "models.config")
    for move in (L.promote, L.rollback, lambda p: L.move_stable(p, 1), lambda p: L.stage(p, 1)):
        with pytest.raises(LabelsError, match=f"^{path}: no TF Serving model config file"):
            move(path)
    L.set_canary(path, NAME, BASE, 3)
    with pytest.raises(LabelsError, match="serves model 'penguins', not 'other'"):
        L.set_canary(path, "other", BASE, 4)
    with pytest.raises(LabelsError, match="is served from gs://bucket/serving/penguins"):
        L.set_canary(path, NAME, "gs://elsewhere/penguins", 4)
    assert L.set_canary(path, NAME, BASE + "/", 4).canary == 4  # a trailing / is the same
    with pytest.raises(LabelsError, match="must be an integer version, not '5'"):
        L.set_canary(path, NAME, BASE, "5")
    with open(path, "w") as f:
        f.write(_file("", labels="    version_labels { key: 'stable' value: 3 }\n"))
    with pytest.raises(LabelsError, match="has no canary label to promote"):
        L.promote(path)
    with open(path, "w") as f:
        f.write(_file("", labels="    version_labels { key: 'canary' value: 3 }\n"))
    with pytest.raises(LabelsError, match="has no stable label to roll back to"):
        L.rollback(path)


# ---------------------------------------------------------------------- atomic write


def test_write_is_atomic(tmp_path, monkeypatch):
    folder = tmp_path / "serving"
    path = str(folder / "models.config")
    old = LabelConfig(NAME, BASE, 3, 3)
    L.write(path, old)
    os.chmod(path, 0o640)

    seen = []
    real_replace = os.replace

    def spy(src, dst):
        # At the rename: the whole new text is in a temp file next to the target, and a
        # reader of the target still sees the whole old file.
        seen.append(src)
        assert os.path.dirname(src) == str(folder) and dst == path
        assert open(src).read() == EXPECTED
        assert open(dst).read() == L.render(old)
        assert os.stat(src).st_mode & 0o777 == 0o640  # the file keeps its permissions
        return real_replace(src, dst)

    monkeypatch.setattr(os, "replace", spy)
    L.set_canary(path, NAME, BASE, 4)
    assert len(seen) == 1 and not os.path.exists(seen[0])
    assert os.listdir(folder) == ["models.config"]
    assert open(path).read() == EXPECTED
    assert os.stat(path).st_mode & 0o777 == 0o640


def test_new_file_is_readable_by_others(tmp_path):
    path = str(tmp_path / "models.config")
    umask = os.umask(0o022)
    try:
        L.write(path, LabelConfig(NAME, BASE, 3, 3))
    finally:
        os.umask(umask)
    assert os.stat(path).st_mode & 0o777 == 0o644


def test_failed_write_leaves_the_old_file_and_no_temp(tmp_path, monkeypatch):
    path = str(tmp_path / "models.config")
    L.write(path, LabelConfig(NAME, BASE, 3, 3))
    before = open(path).read()

    def fail(src, dst):
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(os, "replace", fail)
    with pytest.raises(StorageError, match=f"Cannot write {path}: Input/output error"):
        L.set_canary(path, NAME, BASE, 4)
    assert os.listdir(tmp_path) == ["models.config"]
    assert open(path).read() == before


def test_invalid_config_is_never_written(tmp_path):
    path = str(tmp_path / "models.config")
    with pytest.raises(LabelsError):
        L.write(path, LabelConfig(NAME, BASE, None, None))
    assert os.listdir(tmp_path) == []
