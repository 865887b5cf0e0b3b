"""Which Linears does dynamic int8 break? A per-layer sensitivity scan (issue "Pruning that pays", part 2).

For one model the structured benchmark left, ``pruneformer export --quantize int8`` is re-run with every Linear
in int8 but one (kept fp32), one layer at a time: the dev accuracy each such graph regains over the all-int8
graph is that Linear's sensitivity. The most sensitive Linears, chosen on **dev** only, are then kept fp32
together (1, 2, 4 of them) and scored on **test**, beside the fp32 model and the plain int8 export, so the
table says what fixing a fragile int8 model costs in kept fp32 weights (speed: ``benchmarks/int8_choices.py``'s
latency records; an fp32 Linear runs at fp32 speed).

    python benchmarks/int8_sensitivity.py --preset standard-b4 --seed 0 --model "l1-structured 0.2"
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import torch

from pruneformer.deploy.export import check_inputs, export_model, full_output_rows
from pruneformer.deploy.hardware import cpu_description
from pruneformer.deploy.quantize import fp32_linears, quantize_int8
from pruneformer.deploy.runtime import compare, score, session
from pruneformer.models.saved import load_pruned_model

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from structured import embedded_splits  # noqa: E402  (benchmarks/structured.py: the sweeps' data splits)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="standard-b4", help="the structured sweep's results name (preset + tag)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--model", default="l1-structured 0.2", help="'<method> <fraction>' of a sweep record")
    parser.add_argument("--per-channel", action="store_true", help="scan per-channel int8 instead of per tensor")
    parser.add_argument("--keep", type=int, nargs="+", default=[1, 2, 4], help="how many of the most sensitive to keep")
    args = parser.parse_args()
    torch.set_num_threads(1)
    records = [json.loads(line) for line in (HERE / "results" / f"structured-{args.preset}.jsonl").read_text().splitlines()]
    method, fraction = args.model.rsplit(" ", 1)
    record = next(r for r in records if r["seed"] == args.seed and r["method"] == method
                  and r["fraction"] == float(fraction))
    model_dir = Path(record["model_dir"])
    name = f"int8_sensitivity-{args.preset}-seed{args.seed}-{method}-{fraction}" + ("-per-channel" if args.per_channel else "")
    out_json = HERE / "results" / f"{name}.json"
    state = json.loads(out_json.read_text()) if out_json.is_file() else {"scan": {}, "kept": {}}

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        export_model(model_dir, work / "onnx", log=lambda line: None)  # the fp32 graph, checked against PyTorch
        fp32 = work / "onnx" / "model.onnx"
        model, tokenizer, _ = load_pruned_model(model_dir)
        graph_model = full_output_rows(model.eval())
        batches = check_inputs(tokenizer, model)
        splits = embedded_splits(tokenizer, args.seed)

        def int8(kept: list[str], split) -> float:
            path = work / "variant.int8.onnx"
            quantize_int8(fp32, path, graph_model, kept, lambda p: compare(model, session(p), batches),
                          per_channel=args.per_channel)
            return score(path, split, tokenizer, ["accuracy"])["accuracy"]

        head = fp32_linears(graph_model, ["classifier"])
        linears = fp32_linears(graph_model, ["query", "key", "value", "attn_out", "ffn_in", "ffn_out"])
        if "base" not in state:
            state["base"] = {"dev": int8(head, splits.dev), "test": int8(head, splits.test),
                             "fp32_dev": record["dev"], "fp32_test": record["test"]}
        for i, linear in enumerate(linears):
            if linear in state["scan"]:
                continue
            state["scan"][linear] = int8(head + [linear], splits.dev) - state["base"]["dev"]
            print(f"[{i + 1}/{len(linears)}] {linear} fp32: dev {100 * state['scan'][linear]:+.1f}", flush=True)
            out_json.write_text(json.dumps(state, indent=2))
        ranked = sorted(state["scan"], key=lambda k: -state["scan"][k])
        for k in args.keep:
            if str(k) not in state["kept"]:
                kept = ranked[:k]
                state["kept"][str(k)] = {"linears": kept, "dev": int8(head + kept, splits.dev),
                                         "test": int8(head + kept, splits.test),
                                         "fp32_weight_share": sum(graph_model.get_submodule(n).weight.numel() for n in kept)
                                         / sum(graph_model.get_submodule(n).weight.numel() for n in linears)}
                out_json.write_text(json.dumps(state, indent=2))
    state["cpu"] = cpu_description()
    out_json.write_text(json.dumps(state, indent=2))
    base = state["base"]
    lines = [f"int8 sensitivity of `{args.model}`, seed {args.seed}, sweep `{args.preset}` "
             f"({'per-channel' if args.per_channel else 'per-tensor'} dynamic int8, classifier fp32); "
             f"{cpu_description()}. Ranked on dev; test only for the chosen sets.", "",
             "| deployment | dev | test | encoder weights kept fp32 |", "|---|---|---|---|",
             f"| fp32 | {100 * base['fp32_dev']:.1f} | {100 * base['fp32_test']:.1f} | 1.000 |",
             f"| int8, all Linears | {100 * base['dev']:.1f} | {100 * base['test']:.1f} | 0.000 |"]
    for k, row in state["kept"].items():
        lines.append(f"| int8, {k} most sensitive fp32 ({', '.join(n.split('.', 3)[-1] for n in row['linears'])}) | "
                     f"{100 * row['dev']:.1f} | {100 * row['test']:.1f} | {row['fp32_weight_share']:.3f} |")
    lines += ["", "Dev points regained by keeping one Linear fp32 (all others int8), most sensitive first:", "",
              "| Linear | dev gain |", "|---|---|"]
    lines += [f"| {n} | {100 * state['scan'][n]:+.1f} |" for n in ranked[:12]]
    markdown = "\n".join(lines) + "\n"
    (HERE / "results" / f"{name}.md").write_text(markdown)
    print(markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
