"""Image classification data: a folder of class subfolders, a CSV of ``path,label``, or the textile defect task
that ships in ``conformal-clip-data`` (``textile``: 2,000 images, 250 x 250 RGB, classes nominal / local defect /
global defect).

A bundle's ``image`` column holds file paths; pixels are read batch by batch by :class:`ImageCollator` with the
model's image processor (and, for training, random crops and flips when ``augment`` is on), so a data set never
sits decoded in memory. Dev and test are stratified, seeded splits of the training data unless given.
"""

from __future__ import annotations

import csv
import importlib.util
import random
from pathlib import Path
from typing import Any, Sequence

import datasets
import torch

from ..errors import DataError
from .bundle import CLASSIFICATION, DataBundle, TaskSpec

IMAGE_COLUMN = "image"
SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
TEXTILE = ("textile", "conformal-clip-data")
TEXTILE_INSTALL = "pip install --no-deps conformal-clip-data==0.1.4 (scripts/setup.sh does it)"
#: the textile task's classes, in label order, and the package's folder attribute for each
TEXTILE_CLASSES = (("nominal", "nominal_dir"), ("local defect", "local_dir"), ("global defect", "global_dir"))


def is_image_source(source: str) -> bool:
    """Whether a data source names images: the textile task, a folder of class folders, or a CSV of image paths."""
    path = Path(source).expanduser()
    if source.lower() in TEXTILE or path.is_dir():
        return True
    if path.suffix.lower() == ".csv" and path.is_file():
        with path.open(newline="") as handle:
            header = next(csv.reader(handle), [])
        return [h.strip().lower() for h in header[:2]] == ["path", "label"]
    return False


def textile_folders() -> list[tuple[str, Path]]:
    """The textile task's class folders, found without importing the package's dependencies."""
    spec = importlib.util.find_spec("conformal_clip_data")
    if spec is None or not spec.submodule_search_locations:
        raise DataError("The textile image task needs the 'conformal-clip-data' package.", TEXTILE_INSTALL)
    import conformal_clip_data as package

    return [(name, Path(getattr(package, attribute)())) for name, attribute in TEXTILE_CLASSES]


def _folder_rows(root: Path) -> tuple[list[tuple[str, str]], list[str]]:
    classes = sorted(p.name for p in root.iterdir() if p.is_dir())
    if len(classes) < 2:
        raise DataError(f"image folder '{root}' has {len(classes)} class subfolder(s).",
                        "put each class's images in its own subfolder (at least two), or pass a CSV of path,label")
    rows = [(str(f), c) for c in classes for f in sorted((root / c).iterdir()) if f.suffix.lower() in SUFFIXES]
    return rows, classes


def _csv_rows(path: Path) -> tuple[list[tuple[str, str]], list[str]]:
    with path.open(newline="") as handle:
        rows = [(r["path"], r["label"]) for r in csv.DictReader(handle)]
    rows = [(str((path.parent / p).resolve()) if not Path(p).is_absolute() else p, label) for p, label in rows]
    missing = [p for p, _ in rows if not Path(p).is_file()]
    if missing:
        raise DataError(f"{len(missing)} image(s) listed in '{path}' do not exist, e.g. '{missing[0]}'.",
                        "write paths relative to the CSV's folder or absolute")
    return rows, sorted({label for _, label in rows})


def load_images(source: str, seed: int = 0, dev_fraction: float = 0.15, test_fraction: float = 0.15) -> DataBundle:
    """An image classification bundle: stratified, seeded train / dev / test splits of one set of images."""
    if source.lower() in TEXTILE:
        folders = textile_folders()
        classes = [name for name, _ in folders]
        rows = [(str(f), name) for name, folder in folders for f in sorted(folder.iterdir())
                if f.suffix.lower() in SUFFIXES]
        name = "textile"
    else:
        path = Path(source).expanduser()
        rows, classes = _folder_rows(path) if path.is_dir() else _csv_rows(path)
        name = path.stem
    if not rows:
        raise DataError(f"image source '{source}' holds no images ({', '.join(SUFFIXES)}).", "check the path")
    index = {c: i for i, c in enumerate(classes)}
    rng = random.Random(seed)
    splits: dict[str, list[tuple[str, int]]] = {"train": [], "dev": [], "test": []}
    for label in classes:  # stratified: each class split in the same proportions
        mine = [(p, index[label]) for p, lab in rows if lab == label]
        rng.shuffle(mine)
        n_test, n_dev = round(test_fraction * len(mine)), round(dev_fraction * len(mine))
        splits["test"] += mine[:n_test]
        splits["dev"] += mine[n_test:n_test + n_dev]
        splits["train"] += mine[n_test + n_dev:]
    task = TaskSpec(name=name, text_column=IMAGE_COLUMN, text_pair_column=None, label_column="label",
                    problem_type=CLASSIFICATION, num_labels=len(classes), label_names=list(classes),
                    metrics=["accuracy", "mcc"])

    def table(part: list[tuple[str, int]]) -> datasets.Dataset | None:
        if not part:
            return None
        return datasets.Dataset.from_dict({IMAGE_COLUMN: [p for p, _ in part], "label": [y for _, y in part]},
                                          features=datasets.Features({IMAGE_COLUMN: datasets.Value("string"),
                                                                      "label": datasets.Value("int64")}))

    return DataBundle(task=task, train=table(splits["train"]), dev=table(splits["dev"]), test=table(splits["test"]))


def image_bundle(bundle: DataBundle, augment: bool = False) -> DataBundle:
    """The splits as model inputs: the image paths and ``labels`` (pixels are read by :class:`ImageCollator`);
    with ``augment`` the training rows carry ``augment`` so the collator crops and flips them, and only them."""
    def run(ds, train: bool = False):
        if ds is None:
            return None
        ds = ds.rename_column(bundle.task.label_column, "labels").select_columns([IMAGE_COLUMN, "labels"])
        return ds.add_column("augment", [True] * len(ds)) if train and augment else ds

    return DataBundle(task=bundle.task, train=run(bundle.train, True), dev=run(bundle.dev), test=run(bundle.test))


class ImageCollator:
    """Reads a batch of image paths into ``pixel_values`` with the model's image processor.

    Rows marked ``augment`` (the training split with ``data.augment``) get a random crop (70-100% of each side)
    and a horizontal flip before the processor; every other row the processor's deterministic resize and crop.
    """

    def __init__(self, processor: Any, seed: int = 0) -> None:
        self.processor = processor
        self.rng = random.Random(seed)

    def _open(self, path: str, augment: bool):
        from PIL import Image, ImageOps

        image = Image.open(path).convert("RGB")
        if augment:
            w, h = image.size
            scale = self.rng.uniform(0.7, 1.0)
            cw, ch = max(1, int(w * scale)), max(1, int(h * scale))
            x, y = self.rng.randint(0, w - cw), self.rng.randint(0, h - ch)
            image = image.crop((x, y, x + cw, y + ch))
            if self.rng.random() < 0.5:
                image = ImageOps.mirror(image)
        return image

    def __call__(self, rows: Sequence[dict]) -> dict[str, torch.Tensor]:
        images = [self._open(r[IMAGE_COLUMN], bool(r.get("augment"))) for r in rows]
        pixels = self.processor(images=images, return_tensors="pt")
        return {"pixel_values": pixels["pixel_values"], "labels": torch.tensor([int(r["labels"]) for r in rows])}
