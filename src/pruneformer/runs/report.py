"""Run reports: ``report.json`` (everything), ``report.md`` (tables) and ``training_curves.png``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def hardware_summary() -> str:
    """The CPU and its instruction set, thread count and torch version, written beside every benchmark number."""
    import torch

    from ..deploy.hardware import cpu_description

    return f"{cpu_description()}, {torch.get_num_threads()} threads, torch {torch.__version__}"


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4f}"
    return str(value)


def markdown_table(rows: list[dict[str, Any]], columns: list[str]) -> str:
    head = "| " + " | ".join(columns) + " |\n|" + "---|" * len(columns) + "\n"
    return head + "".join("| " + " | ".join(_fmt(r.get(c, "")) for c in columns) + " |\n" for r in rows)


def render_markdown(report: dict[str, Any]) -> str:
    lines = [f"# pruneformer report: {report['method']} {report['pattern']}", ""]
    lines += [f"- model: `{report['model']}`", f"- task: {report['task']['name']} "
              f"(train {report['data_sizes']['train']}, dev {report['data_sizes']['dev']}, "
              f"test {report['data_sizes'].get('test', 0)})", f"- seed: {report['seed']}",
              f"- overall sparsity of targeted layers: {report['overall_sparsity']:.4f}",
              f"- every targeted layer satisfies {report['pattern']}: {report['all_layers_satisfy_pattern']}", ""]
    lines += [f"> **Warning:** {w}\n" for w in report.get("warnings", [])]
    lines += ["## Dense vs pruned", ""]
    rows = []
    for split in ("dev", "test"):
        for name, value in report["dense"].get(split, {}).items():
            pruned = report["pruned"].get(split, {}).get(name)
            rows.append({"split": split, "metric": name, "dense": value, "pruned": pruned,
                         "delta": (pruned - value) if pruned is not None else ""})
    lines += [markdown_table(rows, ["split", "metric", "dense", "pruned", "delta"]), ""]
    lines += ["## Phases", ""]
    lines += [markdown_table([{"phase": p["name"], "steps": p["steps"], "wall time (s)": p["wall_time_s"],
                               "mean step (s)": p["mean_step_time_s"]} for p in report["phases"]],
                             ["phase", "steps", "wall time (s)", "mean step (s)"]), ""]
    if report.get("admm_step_time_ratio"):
        lines += [f"ADMM step time / dense step time: {report['admm_step_time_ratio']:.3f}", ""]
    residuals = admm_history(report)
    if residuals:
        proj = sorted({k for h in residuals for k in h if k.startswith("proj_dev_")})
        lines += ["## ADMM diagnostics per Z/U update", "",
                  "primal = ||W-Z||/||W|| (must fall below the target before the hard prune); z_change = "
                  "||Z_k - Z_(k-1)||/||W||; mask_changed = share of pattern groups whose kept set changed; "
                  "magnitude_agreement = share of groups kept as one-shot magnitude pruning of the starting "
                  "weights would; flipped_back = share of groups whose kept set returned to the one of two updates "
                  "before (a dual oscillation); proj_dev = dev score of Proj(W), the model a hard prune now would give.", "",
                  markdown_table(residuals, ["update", "step", "rho", "primal_residual", "dual_residual", "z_change",
                                             "mask_changed", "flipped_back", "magnitude_agreement", *proj]), ""]
    structured = report.get("structured")
    if structured:  # mlpruning / l1-structured: a physically smaller model
        lines += ["## Per-layer kept heads and neurons", "",
                  f"Encoder weights remaining: {structured['remaining_fraction']:.4f} (target {structured['target']}); "
                  f"stored {structured['shrunk_encoder_weights']:,} of {structured['dense_encoder_weights']:,}; "
                  f"model file {structured['model_file_bytes'] / 1e6:.1f} MB.", "",
                  markdown_table(structured["kept_per_layer"], ["layer", "heads", "ffn_units", "attn_out_rows",
                                                                "ffn_out_rows"]), ""]
    lines += ["## Per-layer sparsity", "",
              markdown_table(report["layers"], ["layer", "shape", "sparsity", "satisfies_pattern"]), ""]
    return "\n".join(lines)


def admm_history(report: dict[str, Any]) -> list[dict[str, Any]]:
    """ADMM's per-update records from the phases of a report (empty for other methods)."""
    return [h for p in report["phases"] if p["name"].endswith("admm") for h in p["method_history"]]


def plot_curves(report: dict[str, Any], path: Path) -> None:
    """Loss per phase against global step; for ADMM also its residuals and its mask diagnostics per update."""
    residuals = admm_history(report)
    fig, axes = plt.subplots(1, 3 if residuals else 1, figsize=(16 if residuals else 6, 4), squeeze=False)
    ax = axes[0][0]
    offset = 0
    for phase in report["phases"]:
        curve = phase["loss_curve"]
        if curve:
            ax.plot([offset + s for s, _ in curve], [v for _, v in curve], marker="." if len(curve) < 30 else None, label=phase["name"])
        offset += phase["steps"]
    ax.set(xlabel="optimizer step", ylabel="training loss", title="Training loss by phase")
    if ax.get_legend_handles_labels()[0]:
        ax.legend()
    if residuals:
        ax = axes[0][1]
        ax.semilogy([h["update"] for h in residuals], [max(h["primal_residual"], 1e-12) for h in residuals],
                    marker="o", label="primal ||W-Z||/||W||")
        dual = [(h["update"], h["dual_residual"]) for h in residuals if h["dual_residual"] > 0]
        if dual:
            ax.semilogy(*zip(*dual), marker="x", label="dual rho||Z-Z'||/||W||")
        changes = [(h["update"], h["z_change"]) for h in residuals if h.get("z_change", 0) > 0]
        if changes:
            ax.semilogy(*zip(*changes), marker=".", label="||Z_k - Z_(k-1)||/||W||")
        ax.set(xlabel="Z/U update", ylabel="residual", title="ADMM residuals")
        ax.legend()
        ax = axes[0][2]
        updates = [h["update"] for h in residuals]
        for key, label in (("mask_changed", "groups whose mask changed"),
                           ("magnitude_agreement", "agreement with one-shot magnitude")):
            if all(key in h for h in residuals):
                ax.plot(updates, [h[key] for h in residuals], marker=".", label=label)
        for key in sorted({k for h in residuals for k in h if k.startswith("proj_dev_")}):
            points = [(h["update"], h[key]) for h in residuals if key in h]
            ax.plot(*zip(*points), marker="s", label=f"dev {key.removeprefix('proj_dev_')} of Proj(W)")
        ax.set(xlabel="Z/U update", ylabel="fraction", title="ADMM masks", ylim=(0, 1.02))
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_report(report: dict[str, Any], directory: str | Path, name: str = "report",
                 render: Callable[[dict[str, Any]], str] | None = render_markdown) -> dict[str, Path]:
    """The one writer of every command's report: ``<name>.json`` (everything), ``<name>.md`` (``render``'s
    tables; none when ``render`` is None) and, for runs that trained, ``training_curves.png``."""
    directory = Path(directory)
    paths = {"json": directory / f"{name}.json"}
    paths["json"].write_text(json.dumps(report, indent=2, default=str))
    if render is not None:
        paths["markdown"] = directory / f"{name}.md"
        paths["markdown"].write_text(render(report))
    if report.get("phases"):
        paths["plot"] = directory / "training_curves.png"
        plot_curves(report, paths["plot"])
    return paths
