"""The embedded movie-sentiment task: fetched once, verified by sha256, cached, split by a seed.

The 10,605 movie-review snippets with human mean sentiment scores that ship inside the ``vaderSentiment==3.3.2``
source distribution on PyPI (Hutto & Gilbert, ICWSM 2014). They are fetched once with ``pip download`` (PyPI
is reachable where the Hugging Face hub may not be), verified by sha256 and cached under ``<cache>/vader/``.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

import datasets
import numpy as np
import pandas as pd

from ..errors import DataError, brief
from .bundle import CLASSIFICATION, DataBundle, TaskSpec


def default_cache_dir() -> Path:
    """Where pruneformer keeps downloaded data: ``$PRUNEFORMER_CACHE`` or ``~/.cache/pruneformer``.

    An environment variable rather than a config file so that CI, tests and shared machines can redirect it.
    """
    env = os.environ.get("PRUNEFORMER_CACHE", "").strip()
    return Path(env).expanduser() if env else Path.home() / ".cache" / "pruneformer"


def file_sha256(path: Path) -> str:
    """The sha256 of a file, read in 1 MiB chunks (archives and model files are checked before use)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _atomic_write(path: Path, data: bytes) -> None:
    """Write via a temporary file and rename, so an interrupted run never leaves a half-written cache file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600 files; a shared cache should be readable like any other
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


VADER_REQUIREMENT = "vaderSentiment==3.3.2"
VADER_SDIST_NAME = "vaderSentiment-3.3.2.tar.gz"
VADER_SDIST_ENV = "PRUNEFORMER_VADER_SDIST"
#: Path of the data archive inside the sdist (below its top-level ``vaderSentiment-3.3.2/`` folder).
VADER_ARCHIVE_MEMBER = "additional_resources/hutto_ICWSM_2014.tar.gz"
#: sha256 of ``hutto_ICWSM_2014.tar.gz`` as shipped in vaderSentiment-3.3.2.tar.gz (2,338,514 bytes).
VADER_ARCHIVE_SHA256 = "d5bb07d87474b3eb8d30b4deccbc23f19d742a6c5718fbacc65485b70b95c5fa"
VADER_SNIPPETS_MEMBER = "hutto_ICWSM_2014/movieReviewSnippets_GroundTruth.txt"
#: sha256 of the extracted ``movieReviewSnippets_GroundTruth.txt`` (1,383,098 bytes, 10,605 rows).
VADER_SNIPPETS_SHA256 = "c8293b0d942e90e223ea2c0955d969040d1a1be514a978b9af0698940bd13350"
EMBEDDED_DEV_SIZE = 1000
EMBEDDED_TEST_SIZE = 1000
EMBEDDED_TASK = TaskSpec(
    name="movie-sentiment",
    text_column="text",
    text_pair_column=None,
    label_column="label",
    problem_type=CLASSIFICATION,
    num_labels=2,
    label_names=["negative", "positive"],
    metrics=["accuracy", "f1"],
)
_MANUAL_FETCH = (
    f"on a machine with network run `pip download --no-deps --no-binary :all: {VADER_REQUIREMENT}` (or download "
    f"{VADER_SDIST_NAME} from https://pypi.org/project/vaderSentiment/3.3.2/#files), copy it here and set "
    f"{VADER_SDIST_ENV}=/path/to/{VADER_SDIST_NAME}."
)


def _download_vader_sdist(dest: Path) -> Path:
    """Fetch the sdist with pip, which works wherever PyPI does (proxies, mirrors, pip.conf) without new code."""
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:", VADER_REQUIREMENT]
    cmd += ["-d", str(dest)]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    except (OSError, subprocess.SubprocessError) as exc:
        raise DataError(f"could not run pip to download {VADER_REQUIREMENT}: {brief(exc)}.", _MANUAL_FETCH) from exc
    found = sorted(dest.glob("vaderSentiment-*.tar.gz"))
    if proc.returncode != 0 or not found:
        lines = [ln for ln in (proc.stderr or proc.stdout or "").splitlines() if ln.strip()]
        reason = brief(lines[-1]) if lines else f"exit status {proc.returncode}"
        raise DataError(f"pip could not download {VADER_REQUIREMENT} ({reason}).", _MANUAL_FETCH)
    return found[0]


def _archive_from_sdist(sdist: Path) -> bytes:
    """Read the inner ICWSM archive out of the sdist without extracting anything else to disk."""
    try:
        with tarfile.open(sdist, "r:*") as tar:
            for member in tar.getmembers():
                if member.isfile() and member.name.endswith(VADER_ARCHIVE_MEMBER):
                    fobj = tar.extractfile(member)
                    if fobj is not None:
                        return fobj.read()
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise DataError(f"{sdist} is not a readable .tar.gz ({brief(exc)}).", _MANUAL_FETCH) from exc
    raise DataError(f"{sdist} does not contain {VADER_ARCHIVE_MEMBER}; it is not the {VADER_REQUIREMENT} sdist.",
                    _MANUAL_FETCH)


def _snippets_from_archive(archive: Path) -> bytes:
    try:
        with tarfile.open(archive, "r:*") as tar:
            for member in tar.getmembers():
                if member.isfile() and member.name.endswith(VADER_SNIPPETS_MEMBER.split("/")[-1]):
                    fobj = tar.extractfile(member)
                    if fobj is not None:
                        return fobj.read()
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise DataError(f"cannot read {archive} ({brief(exc)}).",
                        f"delete {archive.parent} and run again.") from exc
    raise DataError(f"{archive} does not contain {VADER_SNIPPETS_MEMBER}.", f"delete {archive.parent} and run again.")


def ensure_vader_snippets(cache_dir: str | Path | None = None) -> Path:
    """Return the path of the cached, verified ``movieReviewSnippets_GroundTruth.txt``, fetching it if needed.

    Order: verify a cached archive (a corrupt one is an error, never silently used), reuse a cached text file
    whose hash matches, otherwise take the sdist from ``$PRUNEFORMER_VADER_SDIST`` or ``pip download``.
    """
    vdir = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    vdir = vdir / "vader"
    archive = vdir / VADER_ARCHIVE_MEMBER.split("/")[-1]
    snippets = vdir / VADER_SNIPPETS_MEMBER.split("/")[-1]

    if archive.exists():
        digest = file_sha256(archive)
        if digest != VADER_ARCHIVE_SHA256:
            raise DataError(
                f"cached archive {archive} is corrupt (sha256 {digest[:12]}..., "
                f"expected {VADER_ARCHIVE_SHA256[:12]}...).",
                f"delete {vdir} and run again to fetch a fresh copy.",
            )
    if snippets.exists() and file_sha256(snippets) == VADER_SNIPPETS_SHA256:
        return snippets

    if not archive.exists():
        env = os.environ.get(VADER_SDIST_ENV, "").strip()
        if env:
            sdist = Path(env).expanduser()
            if not sdist.is_file():
                raise DataError(f"{VADER_SDIST_ENV} points at {sdist}, which is not a file.", _MANUAL_FETCH)
            data = _archive_from_sdist(sdist)
            origin = str(sdist)
        else:
            with tempfile.TemporaryDirectory(prefix="pruneformer-vader-") as tmp:
                data = _archive_from_sdist(_download_vader_sdist(Path(tmp)))
            origin = f"pip download {VADER_REQUIREMENT}"
        digest = hashlib.sha256(data).hexdigest()
        if digest != VADER_ARCHIVE_SHA256:
            raise DataError(
                f"{VADER_ARCHIVE_MEMBER} from {origin} has sha256 {digest[:12]}..., expected "
                f"{VADER_ARCHIVE_SHA256[:12]}... (wrong or tampered file).",
                f"use the original {VADER_SDIST_NAME} from PyPI.",
            )
        _atomic_write(archive, data)

    text = _snippets_from_archive(archive)
    if hashlib.sha256(text).hexdigest() != VADER_SNIPPETS_SHA256:
        raise DataError(f"{VADER_SNIPPETS_MEMBER} in {archive} has an unexpected sha256.",
                        f"delete {vdir} and run again.")
    _atomic_write(snippets, text)
    return snippets


def _parse_vader_snippets(path: Path) -> pd.DataFrame:
    """Parse ``id<TAB>mean score<TAB>sentence`` lines (CRLF, UTF-8) into text / label / score."""
    rows: list[tuple[str, float]] = []
    for lineno, line in enumerate(path.read_text(encoding="utf-8-sig").split("\n"), start=1):
        line = line.rstrip("\r")
        if not line.strip():
            continue
        parts = line.split("\t", 2)
        try:
            score = float(parts[1])
        except (IndexError, ValueError):
            raise DataError(f"{path} line {lineno} is not 'id<TAB>score<TAB>text'.",
                            f"delete {path.parent} and run again.") from None
        rows.append((parts[2].strip() if len(parts) > 2 else "", score))
    df = pd.DataFrame(rows, columns=["text", "score"])
    # A mean score of exactly 0 is neither positive nor negative (37 snippets): drop rather than guess.
    df = df[df["score"] != 0.0].reset_index(drop=True)
    df["label"] = (df["score"] > 0).astype(np.int64)
    df["score"] = df["score"].astype(np.float32)
    return df[["text", "label", "score"]]


def load_embedded_sentiment(cache_dir: str | Path | None = None, seed: int = 0) -> DataBundle:
    """The default task: binary sentiment of 10,568 movie-review snippets (label 1 = mean score > 0).

    Split with ``numpy.random.default_rng(seed).permutation``: the first 1,000 rows are dev, the next 1,000
    test, the rest (8,568) train, so a seed fully determines the split on every machine.
    """
    df = _parse_vader_snippets(ensure_vader_snippets(cache_dir))
    if len(df) <= EMBEDDED_DEV_SIZE + EMBEDDED_TEST_SIZE:
        raise DataError(f"the embedded data has only {len(df)} labelled rows.", "delete the vader cache and rerun.")
    perm = np.random.default_rng(seed).permutation(len(df))
    dev_idx = perm[:EMBEDDED_DEV_SIZE]
    test_idx = perm[EMBEDDED_DEV_SIZE:EMBEDDED_DEV_SIZE + EMBEDDED_TEST_SIZE]
    train_idx = perm[EMBEDDED_DEV_SIZE + EMBEDDED_TEST_SIZE:]
    features = datasets.Features(
        {"text": datasets.Value("string"), "label": datasets.Value("int64"), "score": datasets.Value("float32")}
    )

    def split(idx: np.ndarray) -> datasets.Dataset:
        return datasets.Dataset.from_pandas(df.iloc[idx].reset_index(drop=True), features=features,
                                            preserve_index=False)

    return DataBundle(task=EMBEDDED_TASK, train=split(train_idx), dev=split(dev_idx), test=split(test_idx))
