"""What a compare leaves for people: ``compare.json``, the Markdown table ``compare.md`` and ``pareto.png``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .report import ORT_FP32, ORT_INT8, PYTORCH

RUNTIMES = (PYTORCH, ORT_FP32, ORT_INT8)
MARKERS = {PYTORCH: "o", ORT_FP32: "s", ORT_INT8: "^"}


def _machine(lat: dict) -> str:
    """The CPU with its instruction set and threads (records before the ISA was recorded name the CPU only), and
    whether its int8 clips full-range weights (then the int8 scores are this CPU's, not a VNNI / AMX CPU's)."""
    if "machine" not in lat:
        return f"{lat['cpu']} ({lat['hardware']}; instruction set not recorded)"
    clipped = lat["machine"].get("int8_saturates")
    return lat["hardware"] + ("; its ONNX Runtime int8 clips full-range weight products (no VNNI), so the int8 "
                              "scores above are this CPU's" if clipped else "")


def _pm(pair: tuple[float, float] | list[float], n: int) -> str:
    return f"{pair[0]:.2f} ± {pair[1]:.2f}" if n > 1 else f"{pair[0]:.2f}"


def _load(value: float | None) -> str:
    return "unknown" if value is None else f"{value:.2f}"


def _int8_cells(row: dict[str, Any], n: int) -> tuple[str, str]:
    """The int8 accuracy (with its cost) and paired drop of a row: over seeds, or the first seed's (older compares)."""
    if "int8_accuracy" in row:
        return (f"{_pm(row['int8_accuracy'], n)} ({row['int8_cost'][0]:+.2f})", _pm(row["int8_drop"], n))
    if "int8_accuracy_first_seed" in row:
        first = row["int8_accuracy_first_seed"]
        return f"{first:.2f} ({first - row['fp32_accuracy_first_seed']:+.2f})", "-"
    return "-", "-"


def table_markdown(summary: dict[str, Any]) -> str:
    """compare.md: conditions, the accuracy/size table, the latency table, the fronts and the recommendation."""
    lat, split, metric = summary["latency"], summary["split"], summary["metric"]
    batch, length = lat["shape"]
    seeds = summary["seeds"]
    every_seed = any("int8_accuracy" in row for row in summary["rows"])
    lines = [
        "# Which pruning should I use? (`pruneformer compare`)", "",
        f"Same data, seeds {seeds} and budget for every candidate: dense fine-tune {summary['dense_epochs']:g} "
        f"epoch(s) once per seed, then {summary['budget_epochs']:g} epoch(s) of pruning from it (SPP: half for the "
        f"one search, half for each cut's fine-tune). Accuracy: {metric} on {split} (%), mean ± std over seeds; "
        "drop: mean of the per-seed differences to dense (points, positive = worse).", "",
        "| candidate | {0} {1} | dev | drop | encoder weights kept | stored parameters | file (MB) | {2} | int8 drop |"
        .format(split, metric, f"int8 {split} (cost)" if every_seed else f"int8 {split} (seed {lat['seed']})"),
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for row in summary["rows"]:
        n = len(row["seeds"])
        int8, int8_drop = _int8_cells(row, n)
        lines.append(f"| {row['label']} | {_pm(row['accuracy'], n)} | {_pm(row['dev'], n)} | "
                     f"{_pm(row['drop'], n) if row['label'] != 'dense' else '-'} | {100 * row['encoder_kept']:.1f}% | "
                     f"{row['stored_parameters']:,} | {row['file_bytes'] / 1e6:.1f} | {int8} | {int8_drop} |")
    lines += [
        "", f"CPU latency at batch {batch}, length {length} (seed {lat['seed']}'s models), {lat['threads']} thread(s), "
        f"median of {lat['rounds']} interleaved rounds (fastest rounds in compare.json), {_machine(lat)}; 1-minute load {_load(lat['load_before'])} before, {_load(lat['load_after'])} after. "
        "Speed-up over dense PyTorch fp32 in the same rounds (ms in brackets):", "",
        "| candidate | " + " | ".join(RUNTIMES) + " |", "|---|---|---|---|",
    ]
    for row in summary["rows"]:
        cells = [f"{row['speedup'][r]:.2f}x ({1000 * row['latency_s'][r]:.0f})" if r in row["latency_s"] else "-"
                 for r in RUNTIMES]
        lines.append(f"| {row['label']} | " + " | ".join(cells) + " |")
    if lat.get("export_errors"):
        lines += ["", "Not exported: " + "; ".join(f"{k}: {v}" for k, v in lat["export_errors"].items())]
    for name, what in (("latency", "accuracy against latency"), ("size", "accuracy against file size")):
        front = ", ".join(f"{label} ({runtime})" for label, runtime in summary["pareto"][name])
        lines += ["", f"Pareto front, {what}: {front}."]
    if every_seed:
        lines += ["", "int8: every seed's model exported (`pruneformer export --quantize int8`) and scored by ONNX "
                  "Runtime, mean ± std over seeds; cost: int8 minus the same model in fp32; int8 drop: paired by seed "
                  "with the dense fp32 model. An int8 deployment's accuracy and drop below are these."]
    else:
        lines += ["", "int8 accuracy of a deployment: the fp32 mean plus the int8 - fp32 difference measured on seed "
                  f"{lat['seed']}."]
    if summary.get("nm_note"):
        lines += ["", summary["nm_note"]]
    rec = summary["recommendation"]
    lines += ["", "## Recommendation", "", rec["line"]]
    lines += ["", "Latencies within 10% of the fastest (sizes within 2%) count as a tie, and the more accurate "
              "deployment is recommended."]
    for which, title in (("fastest", "Fastest"), ("smallest", "Smallest"), ("beyond", "Faster, at a larger drop")):
        if rec.get(which):
            lines += ["", f"{title}, to reproduce:", "", "```bash", rec[which]["command"], "```"]
    wall = summary.get("wall", {})
    if wall.get("sessions_s"):
        sessions = wall["sessions_s"]
        early = (f"; {wall['interrupted']} of them ended early and count to their last finished run"
                 if wall.get("interrupted") else "")
        lines += ["", f"Wall time: {sum(sessions) / 60:.1f} min in {len(sessions)} session(s) of this compare{early} (training, "
                  f"exports and timing; a session that finds everything done takes seconds). Its runs took {wall['runs_sum_s'] / 60:.1f} min summed over processes; the "
                  f"same models made one `prune` (or `spp-search`) at a time, each with its own dense fine-tune and "
                  f"search, would take {wall['one_run_at_a_time_s'] / 60:.1f} min (from the same measured parts)."]
    lines += ["", "![accuracy against latency and size](pareto.png)"]
    return "\n".join(lines) + "\n"


def plot_pareto(summary: dict[str, Any], path: Path) -> None:
    """Two panels: accuracy against latency and against file size, one marker per runtime, fronts joined."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import ScalarFormatter

    deployments = summary["deployments"]
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.8))
    for ax, cost, scale, label in ((axes[0], "latency_ms", 1.0, "latency (ms, batch {} x {})".format(*summary["latency"]["shape"])),
                                   (axes[1], "size_bytes", 1e-6, "file size (MB)")):
        points = [d for d in deployments if d[cost]]
        for runtime in RUNTIMES:
            mine = [d for d in points if d["runtime"] == runtime]
            ax.scatter([d[cost] * scale for d in mine], [d["accuracy"] for d in mine], marker=MARKERS[runtime],
                       label=runtime, alpha=0.8)
        front_names = {tuple(x) for x in summary["pareto"]["latency" if cost == "latency_ms" else "size"]}
        front = sorted((d for d in points if (d["label"], d["runtime"]) in front_names), key=lambda d: d[cost])
        for d in points:  # every candidate named once (its PyTorch point), and every point of the front
            if d["runtime"] == PYTORCH or d in front:
                ax.annotate(d["label"], (d[cost] * scale, d["accuracy"]), fontsize=7, xytext=(3, 3),
                            textcoords="offset points")
        ax.plot([d[cost] * scale for d in front], [d["accuracy"] for d in front], "k--", lw=1, label="Pareto front")
        dense = next((d for d in points if d["label"] == "dense" and d["runtime"] == PYTORCH), None)
        if dense is not None:
            ax.axhline(dense["accuracy"] - summary["max_drop"], color="red", lw=0.8, ls=":",
                       label=f"dense - max drop ({summary['max_drop']:g})")
        ax.set_xscale("log")
        ax.xaxis.set_major_formatter(ScalarFormatter())
        ax.set_xlabel(label)
        ax.set_ylabel(f"{summary['split']} {summary['metric']} (%)")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.suptitle("pruneformer compare: accuracy against latency and size")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_outputs(summary: dict[str, Any], out: Path) -> None:
    """compare.json, compare.md and pareto.png in ``out``."""
    (out / "compare.json").write_text(json.dumps(summary, indent=2, default=str))
    (out / "compare.md").write_text(table_markdown(summary))
    plot_pareto(summary, out / "pareto.png")
