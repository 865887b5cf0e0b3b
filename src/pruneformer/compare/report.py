"""What ``pruneformer compare`` measures after training, and the answer it writes.

* :func:`measure_latency`: every candidate of the first seed (and dense) loaded in one process and timed side
  by side (:func:`pruneformer.deploy.latency.time_models`) in PyTorch fp32 and, when exported, ONNX Runtime fp32 and
  int8; every seed's int8 model is also scored, since int8 changes accuracy (by seed) and fp32 ONNX does not
  (export checks it), so an int8 deployment's drop is paired by seed like the fp32 one.
* :func:`summarise`: mean and spread over seeds, the paired drop against dense, sizes, speed-ups; each
  (candidate, runtime) pair is a *deployment*; the Pareto fronts of accuracy against latency and size, and the
  recommendation: the fastest and the smallest deployment within ``compare.max_drop``.
"""

from __future__ import annotations

import os
import statistics
from pathlib import Path
from typing import Any, Callable, Sequence

import torch

from ..data import tokenize_bundle
from ..data.images import ImageCollator, image_bundle
from ..deploy.hardware import cpu_description, hardware_record
from ..deploy.latency import load_average, time_models
from ..errors import PruneformerError
from ..families import family_of
from ..models.saved import load_pruned_model
from ..runs.report import hardware_summary

PYTORCH, ORT_FP32, ORT_INT8 = "pytorch fp32", "onnxruntime fp32", "onnxruntime int8"
NM_NOTE = ("N:M patterns give no CPU speed-up: the model is stored dense with zeros, and neither PyTorch nor ONNX "
           "Runtime skips them on a CPU, so an N:M candidate runs at the dense model's speed. A speed-up needs a GPU "
           "with sparse tensor cores (NVIDIA Ampere or later) running the 2:4 pattern in 16- or 8-bit types through "
           "cuSPARSELt (torch.sparse.to_sparse_semi_structured); 1:4, 4:8 and block patterns have no such kernel.")


def onnx_dir(model_dir: str | Path) -> Path:
    """Where a candidate's exported model goes: beside its model directory."""
    model_dir = Path(model_dir)
    return model_dir.with_name(model_dir.name + "-onnx")


def _export(model_dir: str, trust_pickle: bool, int8: Any) -> Path:
    """``model_dir`` in ONNX fp32 and int8, the int8 as the recipe's ``qat`` section deploys it (per channel or
    tensor, reduced range or not, which Linears stay fp32), whether or not a QAT stage ran."""
    from ..deploy.export import export_model

    out = onnx_dir(model_dir)
    if not ((out / "export.json").is_file() and (out / "model.int8.onnx").is_file()):
        export_model(model_dir, out, quantize="int8", keep_fp32=tuple(int8.keep_fp32), trust_pickle=trust_pickle,
                     per_channel=int8.per_channel, reduce_range=int8.reduce_range, log=lambda line: None)
    return out


def measure_latency(recipe: Any, records: Sequence[dict], bundle: Any, log: Callable[[str], None],
                    trust_pickle: bool = False) -> dict[str, Any]:
    """Latency (s, fastest of ``compare.rounds`` interleaved rounds) of every first-seed model in every runtime,
    the int8 scores of every seed's model (``int8_scores_by_seed``; ``int8_scores``: the first seed's), and the
    exported files' sizes."""
    from ..deploy.runtime import OnnxClassifier, score
    from ..runs.engine import prepare_data

    c = recipe.compare
    seed = c.seeds[0]
    threads = c.latency_threads or os.cpu_count() or 1
    torch.set_num_threads(threads)
    models: dict[str, Any] = {}
    int8_scores: dict[str, Any] = {}
    int8_by_seed: dict[str, dict[str, Any]] = {}
    files: dict[str, dict[str, int]] = {}
    errors: dict[str, str] = {}
    tokenized = tokenizer = collator = None
    splits: dict[int, Any] = {}
    images = False
    # the timed seed's models first (they are loaded, exported and timed); every other seed's model is exported
    # and its int8 scored, since int8 moves accuracy differently per seed and the drop is paired by seed
    for record in sorted(records, key=lambda r: (r["seed"] != seed, r["seed"])):
        timed = record["seed"] == seed
        if not timed and not c.onnx:
            continue
        if timed or tokenized is None:
            model, tok, _ = load_pruned_model(record["model_dir"], trust_pickle=trust_pickle)
        if timed:
            models[f"{record['label']} | {PYTORCH}"] = model.eval()
            images = family_of(model).modality == "image"
        if not c.onnx:
            continue
        if tokenized is None:
            tokenizer = tok
            tokenized = image_bundle(bundle) if images else tokenize_bundle(bundle, tokenizer, recipe.data.max_length)
            collator = ImageCollator(tok) if images else None
            splits[seed] = tokenized.test if tokenized.test is not None else tokenized.dev
        if record["seed"] not in splits:  # each seed's own dev/test rows (max_eval draws them by seed)
            theirs = prepare_data(recipe.data, record["seed"])
            theirs = image_bundle(theirs) if images else tokenize_bundle(theirs, tokenizer, recipe.data.max_length)
            splits[record["seed"]] = theirs.test if theirs.test is not None else theirs.dev
        try:
            log(f"int8: exporting and scoring {record['label']} (seed {record['seed']})")
            out = _export(record["model_dir"], trust_pickle, recipe.qat)
        except PruneformerError as exc:  # e.g. a model type ONNX export does not cover: time it in PyTorch only
            if timed:
                errors[record["label"]] = str(exc)
                log(f"warning: {record['label']} not exported: {exc}")
            continue
        scores = score(out / "model.int8.onnx", splits[record["seed"]], tokenizer, bundle.task.metrics, collator)
        int8_by_seed.setdefault(record["label"], {})[str(record["seed"])] = scores
        if not timed:
            continue
        int8_scores[record["label"]] = scores
        files[record["label"]] = {"fp32_bytes": (out / "model.onnx").stat().st_size,
                                  "int8_bytes": (out / "model.int8.onnx").stat().st_size}
        models[f"{record['label']} | {ORT_FP32}"] = OnnxClassifier(out / "model.onnx", threads=threads, spin=False)
        models[f"{record['label']} | {ORT_INT8}"] = OnnxClassifier(out / "model.int8.onnx", threads=threads, spin=False)
    first = next(m for k, m in models.items() if k.endswith(PYTORCH))
    if images:  # images are timed at the processor's crop size, not a token length
        crop = getattr(tokenizer, "crop_size", None) or {}
        shape = (c.latency_batch, int(crop.get("height") or first.config.image_size))
    else:
        shape = (c.latency_batch, c.latency_length)
    before = load_average()
    timing = time_models(models, [shape], c.rounds, getattr(first.config, "vocab_size", None), images=images)
    key = f"{shape[0]}x{shape[1]}"
    return {"seed": seed, "shape": list(shape), "threads": threads, "rounds": c.rounds, "timing_s": timing[key],
            "median_s": timing["median"][key], "int8_scores": int8_scores, "int8_scores_by_seed": int8_by_seed,
            "onnx_files": files,
            "export_errors": errors, "load_before": before, "load_after": load_average(), "cpu": cpu_description(),
            "hardware": hardware_summary(), "machine": hardware_record()}


def _mean_std(values: Sequence[float]) -> tuple[float, float]:
    return statistics.mean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def pareto_front(points: Sequence[dict], cost: str) -> list[dict]:
    """Points no other point beats on both ``cost`` (lower is better) and accuracy (higher is better)."""
    return [p for p in points if not any(q[cost] <= p[cost] and q["accuracy"] >= p["accuracy"]
                                         and (q[cost] < p[cost] or q["accuracy"] > p["accuracy"]) for q in points)]


def reproduce_command(deployment: dict, out: Path) -> str:
    """The commands that make this deployment again from the compare's own recipe."""
    seed_dir = out / f"seed{deployment['seed']}"
    if deployment["kind"] == "spp":
        cmd = (f"pruneformer spp-search --recipe {seed_dir / 'spp' / 'recipe.yaml'} -o runs/spp && "
               f"pruneformer spp-extract runs/spp --ratio {deployment['value']:g}")
        model = f"runs/spp/ratio-{deployment['value']:.2f}"
    else:
        slug = Path(deployment["model_dir"]).parent.name
        cmd = f"pruneformer prune --recipe {seed_dir / slug / 'recipe.yaml'} -o runs/{slug}"
        model = f"runs/{slug}/model"
    if deployment["runtime"] != PYTORCH:
        cmd += f" && pruneformer export {model} -o {model}-onnx" + (" --quantize int8" if "int8" in deployment["runtime"] else "")
    return cmd


def summarise(recipe: Any, records: Sequence[dict], latency: dict, candidates: Sequence[Any],
              wall: dict[str, float]) -> dict[str, Any]:
    """Table rows per candidate, deployments, Pareto fronts and the recommendation (see the module docstring)."""
    c = recipe.compare
    metric = next(iter(records[0]["scores"]["dev"]))
    split = "test" if all(r["scores"].get("test") for r in records) else "dev"
    dense = {r["seed"]: 100 * r["scores"][split][metric] for r in records if r["label"] == "dense"}
    rows, deployments = [], []
    dense_record = next(r for r in records if r["label"] == "dense")
    times = latency.get("median_s") or latency["timing_s"]  # the median: one lucky round decides nothing
    base = times.get(f"dense | {PYTORCH}")
    for label in ["dense"] + [x.label for x in candidates if x.label != "dense"]:
        mine = sorted((r for r in records if r["label"] == label), key=lambda r: r["seed"])
        if not mine:
            continue
        acc = [100 * r["scores"][split][metric] for r in mine]
        dev = [100 * r["scores"]["dev"][metric] for r in mine]
        drops = [dense[r["seed"]] - a for r, a in zip(mine, acc) if r["seed"] in dense]
        first = next((r for r in mine if r["seed"] == latency["seed"]), mine[0])
        size = first["size"]
        row = {"label": label, "kind": first.get("candidate", {}).get("kind", "dense"), "seeds": [r["seed"] for r in mine],
               "accuracy": _mean_std(acc), "dev": _mean_std(dev), "drop": _mean_std(drops),
               "encoder_kept": size["encoder_nonzero"] / dense_record["size"]["encoder_nonzero"],
               "stored_parameters": size["stored_parameters"], "file_bytes": size["file_bytes"],
               "wall_s": sum(r["wall_s"] for r in mine), "latency_s": {}, "speedup": {}}
        int8 = latency["int8_scores"].get(label)
        first_acc = 100 * first["scores"][split][metric]
        row |= int8_rows(mine, acc, dense, latency.get("int8_scores_by_seed", {}).get(label, {}), metric)
        for runtime in (PYTORCH, ORT_FP32, ORT_INT8):
            seconds = times.get(f"{label} | {runtime}")
            if seconds is None:
                continue
            row["latency_s"][runtime] = seconds
            row["speedup"][runtime] = base / seconds if base else None
            shift = (100 * int8[metric] - first_acc) if runtime == ORT_INT8 and int8 else 0.0
            accuracy, drop = row["accuracy"][0] + shift, row["drop"][0] - shift
            if runtime == ORT_INT8 and "int8_accuracy" in row:  # every seed's int8 model, paired with its dense
                accuracy, drop = row["int8_accuracy"][0], row["int8_drop"][0]
            files = latency["onnx_files"].get(label, {})
            deployments.append({
                "label": label, "runtime": runtime, "kind": row["kind"], "seed": latency["seed"],
                "value": first.get("candidate", {}).get("value"), "model_dir": first["model_dir"],
                "latency_ms": 1000 * seconds, "speedup": row["speedup"][runtime],
                "accuracy": accuracy, "drop": drop,
                "size_bytes": {PYTORCH: size["file_bytes"], ORT_FP32: files.get("fp32_bytes"),
                               ORT_INT8: files.get("int8_bytes")}[runtime]})
        if int8:
            row["int8_accuracy_first_seed"] = 100 * int8[metric]
            row["fp32_accuracy_first_seed"] = first_acc
        rows.append(row)
    wall = dict(wall) | run_times(records)
    fronts = {"latency": pareto_front(deployments, "latency_ms"),
              "size": pareto_front([d for d in deployments if d["size_bytes"]], "size_bytes")}
    summary = {"metric": metric, "split": split, "max_drop": c.max_drop, "seeds": c.seeds, "rows": rows,
               "deployments": deployments, "pareto": {k: [(d["label"], d["runtime"]) for d in v] for k, v in fronts.items()},
               "latency": dict(latency),
               "budget_epochs": recipe.prune.epochs, "dense_epochs": recipe.dense.epochs, "wall": wall,
               "nm_note": NM_NOTE if any(r["kind"] == "pattern" for r in rows) else None,
               "recipe": recipe.model_dump(mode="json")}
    summary["recommendation"] = recommend(deployments, c.max_drop, Path(recipe.output_dir), metric, split)
    return summary


def int8_rows(mine: Sequence[dict], fp32: Sequence[float], dense: dict[int, float], by_seed: dict[str, Any],
              metric: str) -> dict[str, Any]:
    """A candidate's deployed int8 accuracy over seeds, its drop paired by seed with the dense fp32 model, and
    its int8 cost (int8 minus its own fp32), when every seed's int8 model was scored; else nothing."""
    if not by_seed or any(str(r["seed"]) not in by_seed for r in mine):
        return {}
    int8 = [100 * by_seed[str(r["seed"])][metric] for r in mine]
    return {"int8_accuracy": _mean_std(int8),
            "int8_drop": _mean_std([dense[r["seed"]] - a for r, a in zip(mine, int8) if r["seed"] in dense]),
            "int8_cost": _mean_std([a - f for a, f in zip(int8, fp32)])}


def run_times(records: Sequence[dict]) -> dict[str, float]:
    """The runs' own wall times, summed: as this compare ran them (one dense model and one SPP search per
    seed) and as the same models would cost one ``prune`` / ``spp-search`` at a time (each with its own dense
    fine-tune, each SPP ratio with its own search), from the same measured parts."""
    dense = {r["seed"]: r["wall_s"] for r in records if r["label"] == "dense"}
    searches = {r["seed"]: r["search_wall_s"] for r in records if r.get("search_wall_s") is not None}
    shared = sum(r["wall_s"] for r in records) + sum(searches.values())
    alone = sum(dense.get(r["seed"], 0.0) + r["wall_s"] + (r.get("search_wall_s") or 0.0)
                for r in records if r["label"] != "dense")
    return {"runs_sum_s": shared, "one_run_at_a_time_s": alone}


#: Latencies within this factor of the fastest count as a tie (interleaved rounds on a shared CPU vary by about
#: this much); sizes within SIZE_TIE likewise. Among tied deployments the more accurate one is recommended.
LATENCY_TIE, SIZE_TIE = 1.10, 1.02


def _best(points: Sequence[dict], cost: str, tie: float) -> dict:
    """The cheapest point by ``cost``, or the most accurate of those within ``tie`` of it."""
    cheapest = min(d[cost] for d in points)
    return max((d for d in points if d[cost] <= cheapest * tie), key=lambda d: (d["accuracy"], -d[cost]))


def recommend(deployments: Sequence[dict], max_drop: float, out: Path, metric: str, split: str) -> dict[str, Any]:
    """The fastest and the smallest deployment whose accuracy is within ``max_drop`` points of dense (ties:
    :data:`LATENCY_TIE`, :data:`SIZE_TIE`), and the next faster deployment beyond the tolerance, if any."""
    within = [d for d in deployments if d["drop"] <= max_drop + 1e-9]
    points = "point" if max_drop == 1 else "points"
    if not within:
        return {"fastest": None, "smallest": None, "beyond": None,
                "line": f"No candidate stays within {max_drop:g} {points} of dense: raise --max-drop or the budget."}
    fastest = _best(within, "latency_ms", LATENCY_TIE)
    smallest = _best([d for d in within if d["size_bytes"]], "size_bytes", SIZE_TIE)
    faster = [d for d in deployments if d["latency_ms"] * LATENCY_TIE < fastest["latency_ms"]]
    beyond = min(faster, key=lambda d: d["drop"]) if faster else None

    def says(d: dict) -> str:
        return (f"{d['label']} in {d['runtime']} ({d['speedup']:.2f}x dense PyTorch fp32, {d['size_bytes'] / 1e6:.1f} MB, "
                f"{split} {metric} {d['accuracy']:.2f}, {-d['drop'] + 0.0:+.2f} points)")

    line = (f"Recommendation (at most {max_drop:g} {points} below dense on {split}): fastest {says(fastest)}; "
            f"smallest {says(smallest)}.")
    if beyond is not None:
        line += f" Faster than that only with a larger drop: {says(beyond)}."
    return {"fastest": fastest | {"command": reproduce_command(fastest, out)},
            "smallest": smallest | {"command": reproduce_command(smallest, out)},
            "beyond": beyond | {"command": reproduce_command(beyond, out)} if beyond else None, "line": line}
