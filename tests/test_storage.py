"""kfp_ct.components.common.storage: local paths and gs:// (through the GCS emulator)."""

import os

import pytest

from kfp_ct.components.common import storage
from kfp_ct.components.common.errors import StorageError


@pytest.fixture(params=["local", "gcs"])
def root(request, tmp_path):
    """A fresh, empty root directory: a local tmp dir or a new emulator bucket."""
    if request.param == "local":
        return str(tmp_path / "root")
    return request.getfixturevalue("gcs_emulator").new_bucket()


def _make_tree(local_dir):
    os.makedirs(os.path.join(local_dir, "variables"))
    os.makedirs(os.path.join(local_dir, "assets"))
    files = {
        "saved_model.pb": b"\x08\x01fake",
        "variables/variables.index": b"idx",
        "variables/variables.data-00000-of-00001": b"data",
        "assets/vocab.txt": b"a\nb\n",
    }
    for rel, data in files.items():
        with open(os.path.join(local_dir, rel), "wb") as f:
            f.write(data)
    return files


def _read_local_tree(local_dir):
    out = {}
    for dirpath, _, names in os.walk(local_dir):
        for n in names:
            p = os.path.join(dirpath, n)
            out[os.path.relpath(p, local_dir).replace(os.sep, "/")] = open(p, "rb").read()
    return out


def test_is_gcs_and_join_for_both_kinds():
    assert storage.is_gcs("gs://b/x")
    assert not storage.is_gcs("/tmp/x")
    assert storage.join("gs://b", "a", "b.txt") == "gs://b/a/b.txt"
    assert storage.join("gs://b/dir/", "/a/", "b.txt") == "gs://b/dir/a/b.txt"
    assert storage.join("/tmp/x", "a", "b.txt") == os.path.join("/tmp/x", "a", "b.txt")


def test_bytes_and_text_round_trip(root):
    storage.write_bytes(storage.join(root, "d/e/blob.bin"), b"\x00\x01\xff")
    storage.write_text(storage.join(root, "note.txt"), "héllo\n")
    assert storage.read_bytes(storage.join(root, "d/e/blob.bin")) == b"\x00\x01\xff"
    assert storage.read_text(storage.join(root, "note.txt")) == "héllo\n"
    # overwrite replaces content
    storage.write_text(storage.join(root, "note.txt"), "second")
    assert storage.read_text(storage.join(root, "note.txt")) == "second"


def test_local_write_leaves_no_temp_files(tmp_path):
    target = tmp_path / "new" / "dir" / "f.json"
    storage.write_text(str(target), "{}")
    assert os.listdir(target.parent) == ["f.json"]


def test_exists_isdir_listdir(root):
    storage.write_text(storage.join(root, "a/x.txt"), "x")
    storage.write_text(storage.join(root, "a/sub/y.txt"), "y")
    storage.write_text(storage.join(root, "top.txt"), "t")
    assert storage.exists(storage.join(root, "a"))
    assert storage.exists(storage.join(root, "a/x.txt"))
    assert not storage.exists(storage.join(root, "missing"))
    assert storage.isdir(storage.join(root, "a"))
    assert storage.isdir(storage.join(root, "a/sub"))
    assert not storage.isdir(storage.join(root, "a/x.txt"))
    assert not storage.isdir(storage.join(root, "missing"))
    assert storage.listdir(root) == ["a", "top.txt"]
    assert storage.listdir(storage.join(root, "a")) == ["sub", "x.txt"]


def test_listdir_does_not_match_sibling_prefixes(root):
    storage.write_text(storage.join(root, "1/f"), "")
    storage.write_text(storage.join(root, "10/f"), "")
    assert storage.listdir(storage.join(root, "1")) == ["f"]
    assert storage.listdir(root) == ["1", "10"]


def test_glob_star_and_recursive(root):
    for rel in ["p/a.json", "p/b.json", "p/c.txt", "p/q/d.json"]:
        storage.write_text(storage.join(root, rel), rel)
    assert storage.glob(storage.join(root, "p/*.txt")) == [storage.join(root, "p/c.txt")]
    got = storage.glob(storage.join(root, "p/**/*.json"))
    assert storage.join(root, "p/q/d.json") in got
    assert storage.glob(storage.join(root, "nothing/*")) == []
    if storage.is_gcs(root):  # gs: '*' also crosses '/', like a flat namespace
        assert storage.join(root, "p/a.json") in storage.glob(storage.join(root, "p/*.json"))
    else:
        assert storage.glob(storage.join(root, "p/*.json")) == [
            storage.join(root, "p/a.json"),
            storage.join(root, "p/b.json"),
        ]


def test_missing_file_read_names_the_path(root):
    missing = storage.join(root, "no/such/file.txt")
    with pytest.raises(StorageError, match="no/such/file.txt"):
        storage.read_bytes(missing)


def test_missing_dir_listdir_names_the_path(root):
    missing = storage.join(root, "nodir")
    with pytest.raises(StorageError, match="nodir"):
        storage.listdir(missing)


def test_missing_download_names_the_path(root, tmp_path):
    missing = storage.join(root, "absent")
    with pytest.raises(StorageError, match="absent"):
        storage.download(missing, str(tmp_path / "out"))


def test_gs_uri_without_bucket_is_rejected():
    with pytest.raises(StorageError, match="no bucket"):
        storage.read_bytes("gs://")
    with pytest.raises(StorageError, match="gs:///x"):
        storage.exists("gs:///x")


def test_gs_missing_bucket_names_the_path(gcs_emulator):
    with pytest.raises(StorageError, match="gs://bucket-that-does-not-exist/f"):
        storage.read_text("gs://bucket-that-does-not-exist/f")


def test_write_under_a_regular_file_names_the_path(tmp_path):
    blocker = tmp_path / "plainfile"
    blocker.write_text("x")
    target = str(blocker / "sub" / "f.txt")
    with pytest.raises(StorageError, match="plainfile/sub/f.txt"):
        storage.write_text(target, "y")


def test_tree_upload_download_round_trip(root, tmp_path):
    src = str(tmp_path / "src")
    files = _make_tree(src)
    dst = storage.join(root, "models/1")
    storage.upload_tree(src, dst)
    assert storage.listdir(dst) == ["assets", "saved_model.pb", "variables"]
    out = storage.download(dst, str(tmp_path / "back"))
    assert _read_local_tree(out) == files


def test_download_single_file(root, tmp_path):
    storage.write_bytes(storage.join(root, "one.bin"), b"1")
    out = storage.download(storage.join(root, "one.bin"), str(tmp_path / "x" / "one.bin"))
    assert open(out, "rb").read() == b"1"


def test_upload_tree_writes_last_names_at_the_end(gcs_emulator, tmp_path, gcs_upload_order):
    bucket = gcs_emulator.new_bucket()
    src = str(tmp_path / "src")
    _make_tree(src)
    os.makedirs(os.path.join(src, "deep"))
    open(os.path.join(src, "deep", "saved_model.pb"), "wb").close()  # not top level
    order = gcs_upload_order
    storage.upload_tree(src, storage.join(bucket, "m"))
    assert order[-1] == "m/saved_model.pb"
    assert "m/deep/saved_model.pb" in order[:-1]
    assert len(order) == 5


def test_copy_tree_every_combination(gcs_emulator, tmp_path):
    src = str(tmp_path / "src")
    files = _make_tree(src)
    bucket = gcs_emulator.new_bucket()
    local2 = storage.copy_tree(src, str(tmp_path / "l2"))
    gs1 = storage.copy_tree(local2, storage.join(bucket, "g1"))
    gs2 = storage.copy_tree(gs1, storage.join(bucket, "g2"))
    local3 = storage.copy_tree(gs2, str(tmp_path / "l3"))
    assert _read_local_tree(local2) == files
    assert _read_local_tree(local3) == files


def test_copy_tree_missing_source_names_it(root, tmp_path):
    with pytest.raises(StorageError, match="nosrc"):
        storage.copy_tree(storage.join(root, "nosrc"), str(tmp_path / "dst"))


def test_remove_tree(root):
    storage.write_text(storage.join(root, "t/a"), "")
    storage.write_text(storage.join(root, "t/b/c"), "")
    storage.write_text(storage.join(root, "t2/keep"), "")
    storage.remove_tree(storage.join(root, "t"))
    assert not storage.exists(storage.join(root, "t"))
    assert storage.exists(storage.join(root, "t2/keep"))
    storage.remove_tree(storage.join(root, "t"))  # missing: no error


def test_local_copy_yields_local_paths(root, tmp_path):
    storage.write_text(storage.join(root, "lc/f.txt"), "f")
    with storage.local_copy(storage.join(root, "lc")) as local:
        assert not storage.is_gcs(local)
        assert open(os.path.join(local, "f.txt")).read() == "f"
    if storage.is_gcs(root):
        assert not os.path.exists(local)  # the temporary download is cleaned up
    with storage.local_copy(storage.join(root, "lc/f.txt")) as local_file:
        assert open(local_file).read() == "f"


def test_list_files_gives_every_file_with_its_size(root, tmp_path):
    src = str(tmp_path / "src")
    files = _make_tree(src)
    storage.upload_tree(src, storage.join(root, "models/1"))
    storage.write_text(storage.join(root, "models/10/other"), "not under 1/")
    assert storage.list_files(storage.join(root, "models/1")) == {
        rel: len(data) for rel, data in files.items()}
    assert storage.list_files(storage.join(root, "models/1/variables")) == {
        "variables.index": 3, "variables.data-00000-of-00001": 4}
    assert storage.list_files(storage.join(root, "absent")) == {}
    assert storage.list_files(storage.join(root, "models/1/saved_model.pb")) == {}


# ------------------------------------------------------------------- out of room


def _full_disk(monkeypatch):
    """Makes every file copy fail as on a full file system. Why a monkeypatch: filling a
    real file system needs a small one (a tmpfs mount, i.e. root). os.sendfile is the
    lowest call of shutil's file copy on Linux, so everything above it is the real code;
    shutil re-raises its ENOSPC as it is. Returns the list of calls made."""
    import errno

    calls = []

    def sendfile(*args):
        calls.append(args)
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "sendfile", sendfile)
    return calls


@pytest.mark.parametrize("copy", ["copy_tree", "download", "upload_tree"])
def test_a_full_disk_stops_a_tree_copy_with_one_line_naming_the_path_and_sizes(
        tmp_path, monkeypatch, copy):
    """Before: shutil.copytree tried every file and the error was the list of each
    file's failure ("Cannot copy to ...: [('.../saved_model.pb', ..., '[Errno 28] No
    space left on device'), ...]")."""
    src, dst = str(tmp_path / "src"), str(tmp_path / "dst")
    files = _make_tree(src)
    calls = _full_disk(monkeypatch)
    with pytest.raises(StorageError) as info:
        getattr(storage, copy)(src, dst)
    message = str(info.value)
    assert message.startswith("no space left on /") and f"(writing {dst})" in message
    need = sum(len(d) for d in files.values()) / 1e6
    assert f"need about {need:.1f} MB, " in message and message.endswith(" MB free")
    assert "\n" not in message and "Errno" not in message
    assert len(calls) == 1  # stopped at the first file


def test_a_write_over_the_file_size_limit_says_so(tmp_path):
    """A real limit, no patching: RLIMIT_FSIZE in a child makes a write past it fail
    with EFBIG (SIGXFSZ ignored, or the kernel ends the process)."""
    import subprocess
    import sys

    script = (
        "import resource, signal, sys\n"
        "signal.signal(signal.SIGXFSZ, signal.SIG_IGN)\n"
        "resource.setrlimit(resource.RLIMIT_FSIZE,\n"
        "                   (1 << 20, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))\n"
        "from kfp_ct.components.common import storage\n"
        "try:\n"
        "    storage.write_bytes(sys.argv[1], b'x' * (3 << 20))\n"
        "except storage.StorageError as exc:\n"
        "    print(exc)\n"
        "    sys.exit(3)\n")
    target = str(tmp_path / "big.bin")
    proc = subprocess.run([sys.executable, "-c", script, target], capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 3, proc.stderr
    assert proc.stdout.startswith(f"file size limit reached writing {target}: a file may "
                                  "be at most 1.0 MB for this process (ulimit -f); need "
                                  "about 3.1 MB, ")
    assert proc.stdout.count("\n") == 1
    assert os.listdir(tmp_path) == []  # the temp file went too
