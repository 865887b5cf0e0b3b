"""The tables of ``benchmarks/structured.py``'s sweep: accuracy per method and fraction over seeds, int8 against
dense paired by seed, MLPruning against the L1 baseline, and the machines the records ran on (a sweep spans
sessions and CPUs). Kept apart from the runs so the sweep's script stays one job: running and recording."""

from __future__ import annotations

import statistics

#: MLPruning + blocks: the head/row stage prunes to fraction / BLOCK_KEEP, the block stage keeps BLOCK_KEEP.
BLOCK_KEEP = 0.6
#: The sweep's methods, in the tables' order.
METHODS = ["mlpruning", "l1-structured", "mlpruning-block", "fisher-structured"]


def summarise_accuracy(records: list[dict], preset_name: str, preset: dict) -> tuple[str, dict]:
    def ms(values):
        values = [100 * v for v in values if v is not None]
        if not values:
            return "-", None, None
        sd = statistics.stdev(values) if len(values) > 1 else 0.0
        return f"{statistics.mean(values):.2f} ± {sd:.2f}", statistics.mean(values), sd

    dense = {r["seed"]: (r["dense_dev"], r["dense_test"]) for r in records}
    scheme = "per channel" if preset.get("per_channel") else "per tensor"
    qat = any(r.get("int8_test_before_qat") is not None for r in records)
    lines = [f"Preset `{preset_name}` (train {preset['max_train'] or 'all (8,568)'}, dev/test {preset['max_eval']}, max length 64, "
             f"dense {preset['dense_epochs']} epoch(s), pruning budget {preset['budget']} epoch(s) for both methods "
             f"(MLPruning: {preset['budget'] - preset['finetune']:g} head/row + {preset['finetune']:g} fine-tune of the "
             f"shrunk model; MLPruning + blocks: {preset['budget'] / 2:g} head/row to fraction / {BLOCK_KEEP:g}, then "
             f"{preset['budget'] / 2:g} of 32x32 blocks keeping {BLOCK_KEEP:g}; L1: one-shot + {preset['budget']:g} retrain "
             f"of the shrunk model; kept FFN units and output rows aligned to 16), "
             f"lr {preset['lr']}, MLPruning threshold init {preset['threshold_init']}, score lr {preset['score_lr'] or 'fitted to the budget'}); "
             f"seeds {sorted(dense)}; {machines_of(records)}."
             + (f" Then {preset['qat']:g} epoch(s) of quantization-aware fine-tuning (`qat.epochs`, the export's int8 "
                "in the forward pass, distilled from the dense model)." if preset.get("qat") else ""), "",
             "Accuracy (%) on the held-out test split, mean ± std over seeds (dev in brackets); "
             "'kept' is the measured fraction of encoder Linear weights remaining; 'int8' is the model as deployed "
             f"(`pruneformer export --quantize int8`: dynamic int8, weights {scheme}, classifier fp32) scored by ONNX Runtime; "
             "'int8 vs dense' is the mean ± std of the per-seed test difference to the dense fp32 model, "
             "'int8 cost' that of the model's own int8 to fp32 (points)"
             + ("; 'before QAT' is the same model's int8 test accuracy before the QAT stage, 'QAT gain' the "
                "paired difference" if qat else "") + ":", "",
             "| remaining | method | test | dev | int8 test | int8 vs dense | int8 cost | kept | n |"
             + (" before QAT | QAT gain |" if qat else ""),
             "|---|---|---|---|---|---|---|---|---|" + ("---|---|" if qat else "")]
    summary: dict = {"dense": {}}

    def paired(cell: list[dict], a: str, b: str) -> tuple[str, float | None]:
        diffs = [100 * (r[a] - r[b]) for r in cell if r.get(a) is not None and r.get(b) is not None]
        if not diffs:
            return "-", None
        sd = statistics.stdev(diffs) if len(diffs) > 1 else 0.0
        return f"{statistics.mean(diffs):+.2f} ± {sd:.2f}", statistics.mean(diffs)

    # each seed's first record (the dense int8 of the machine that started the sweep): later shards may run
    # on another CPU, whose int8 kernel computes other numbers (``machines_of``)
    firsts = list({r["seed"]: r for r in reversed(records)}.values())
    test, mean, sd = ms([d[1] for d in dense.values()])
    dev, _, _ = ms([d[0] for d in dense.values()])
    i8, i8mean, _ = ms([r.get("dense_int8_test") for r in firsts])
    i8vs, _ = paired(firsts, "dense_int8_test", "dense_test")
    lines.append(f"| 1.0 | dense | {test} | ({dev}) | {i8} | {i8vs} | {i8vs} | 1.000 | {len(dense)} |")
    summary["dense"] = {"test_mean": mean, "test_std": sd, "int8_test_mean": i8mean, "n": len(dense)}
    fractions = sorted({r["fraction"] for r in records}, reverse=True)
    for fraction in fractions:
        for method in METHODS:
            cell = [r for r in records if r["fraction"] == fraction and r["method"] == method]
            if not cell:
                continue
            test, mean, sd = ms([r["test"] for r in cell])
            dev, dmean, _ = ms([r["dev"] for r in cell])
            i8, i8mean, _ = ms([r.get("int8_test") for r in cell])
            vs, vs_mean = paired(cell, "int8_test", "dense_test")
            cost, cost_mean = paired(cell, "int8_test", "test")
            kept = statistics.mean(r["remaining"] for r in cell)
            row = f"| {fraction:g} | {method} | {test} | ({dev}) | {i8} | {vs} | {cost} | {kept:.3f} | {len(cell)} |"
            if qat:
                pre, _, _ = ms([r.get("int8_test_before_qat") for r in cell])
                gain, gain_mean = paired(cell, "int8_test", "int8_test_before_qat")
                row += f" {pre} | {gain} |"
            lines.append(row)
            summary[f"{method}@{fraction:g}"] = {"test_mean": mean, "test_std": sd, "dev_mean": dmean,
                                                 "int8_test_mean": i8mean, "int8_vs_dense": vs_mean,
                                                 "int8_cost": cost_mean, "kept": kept, "n": len(cell),
                                                 "seeds": [r["seed"] for r in cell],
                                                 **({"qat_gain": gain_mean} if qat else {})}
    lines += ["", "MLPruning against the L1 baseline, same seeds (test points; 'spread' is the larger of the two methods' "
              "stds over seeds; 'paired std' is the std of the per-seed differences; 'wins' counts seeds where "
              "MLPruning's test accuracy is higher):", "",
              "| remaining | method | minus L1 | spread | beats L1 by more than the spread | paired std | wins |",
              "|---|---|---|---|---|---|---|"]
    for fraction in fractions:
        base = {r["seed"]: 100 * r["test"] for r in records if r["fraction"] == fraction and r["method"] == "l1-structured"}
        for method in ("mlpruning", "mlpruning-block"):
            ours = {r["seed"]: 100 * r["test"] for r in records if r["fraction"] == fraction and r["method"] == method}
            seeds = sorted(set(base) & set(ours))
            if not seeds:
                continue
            diffs = [ours[s] - base[s] for s in seeds]
            gap = statistics.mean(diffs)
            spread = max((statistics.stdev([d[s] for s in seeds]) if len(seeds) > 1 else 0.0) for d in (ours, base))
            paired = statistics.stdev(diffs) if len(seeds) > 1 else 0.0
            wins = sum(d > 0 for d in diffs)
            lines.append(f"| {fraction:g} | {method} | {gap:+.2f} | {spread:.2f} | "
                         f"{'yes' if gap > spread and len(seeds) > 1 else 'no'} | {paired:.2f} | {wins}/{len(seeds)} |")
            summary[f"{method}-vs-l1@{fraction:g}"] = {"gap": gap, "spread": spread, "paired_std": paired, "wins": wins,
                                                       "seeds": seeds}
    return "\n".join(lines) + "\n", summary



def machines_of(records: list[dict]) -> str:
    """Where the records ran, each machine once, with the methods it ran: a sweep spans sessions and CPUs,
    and int8 scores from a CPU whose kernel clips (``int8_saturates``) differ from exact ones."""
    machines: dict[str, set] = {}
    for r in records:
        where = r.get("hardware", "machine not recorded")
        if r.get("int8_saturates"):
            where += " (int8 scored on ONNX Runtime's clipping AVX2 kernel)"
        machines.setdefault(where, set()).add(r["method"])
    return "; ".join(f"{', '.join(sorted(m))} on {where}" for where, m in machines.items())

