"""What each int8 choice costs on test, for the models the structured benchmark left (issue "Pruning that pays",
part 2): dynamic int8 as `export --quantize int8` writes it (one scale per matrix), per-channel scales
(`--per-channel`), and the FFN-out Linears kept fp32 as well (`--keep-fp32 classifier --keep-fp32 ffn_out`), each
scored by ONNX Runtime on the same test split as the fp32 model, paired by seed.

    python benchmarks/int8_choices.py --preset standard --seeds 0 2 --models dense "l1-structured 0.5" "mlpruning 0.2"
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

import torch

from pruneformer.deploy.export import export_model
from pruneformer.deploy.hardware import cpu_description
from pruneformer.deploy.runtime import score

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from structured import dense_model_of, embedded_splits  # noqa: E402  (the sweep that wrote the records)

#: variant -> export_model keywords
VARIANTS = {"dynamic": {"per_channel": False}, "per-channel": {"per_channel": True},
            "dynamic, ffn_out fp32": {"per_channel": False, "keep_fp32": ("classifier", "ffn_out")}}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="standard")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--models", nargs="+", default=["dense", "l1-structured 0.5", "mlpruning 0.2"])
    args = parser.parse_args()
    torch.set_num_threads(1)
    results = HERE / "results"
    records = [json.loads(line) for line in (results / f"structured-{args.preset}.jsonl").read_text().splitlines()]
    out_json = results / f"int8_choices-{args.preset}.json"
    rows = json.loads(out_json.read_text())["rows"] if out_json.is_file() else []
    done = {(r["seed"], r["model"], r["variant"]) for r in rows}
    for seed in args.seeds:
        mine = [r for r in records if r["seed"] == seed and Path(r["model_dir"]).is_dir()]
        if not mine:
            print(f"seed {seed}: no models left on this machine")
            continue
        dirs = {f"{r['method']} {r['fraction']:g}": (Path(r["model_dir"]), r["test"]) for r in mine}
        dirs["dense"] = (dense_model_of(mine[0], args.preset), mine[0]["dense_test"])
        splits = None
        for name in args.models:
            if name not in dirs:
                continue
            directory, fp32_test = dirs[name]
            for variant, options in VARIANTS.items():
                if (seed, name, variant) in done:
                    continue
                out = directory.with_name(directory.name + f"-int8-{variant.replace(' ', '').replace(',', '-')}")
                record = export_model(directory, out, quantize="int8", log=lambda line: None, **options)
                if splits is None:
                    from transformers import AutoTokenizer

                    tokenizer = AutoTokenizer.from_pretrained(out)
                    splits = (embedded_splits(tokenizer, seed), tokenizer)
                test = score(out / "model.int8.onnx", splits[0].test, splits[1], ["accuracy"])["accuracy"]
                rows.append({"seed": seed, "model": name, "variant": variant, "test": test, "fp32_test": fp32_test,
                             "int8_bytes": (out / "model.int8.onnx").stat().st_size,
                             "kept_fp32": record["quantization"].get("keep_fp32")})
                print(f"seed {seed} {name} {variant}: int8 {100 * test:.1f} vs fp32 {100 * fp32_test:.1f}", flush=True)
                out_json.write_text(json.dumps({"rows": rows, "cpu": cpu_description()}, indent=2))
    lines = [f"Preset `{args.preset}` models of `benchmarks/structured.py`; test accuracy (%) of each int8 export "
             "scored by ONNX Runtime, `cost` the mean ± std over seeds of int8 minus the same model in fp32 (points); "
             f"{cpu_description()}.", "", "| model | int8 variant | int8 test | cost | seeds |", "|---|---|---|---|---|"]
    for name in dict.fromkeys(r["model"] for r in rows):
        for variant in VARIANTS:
            cell = [r for r in rows if r["model"] == name and r["variant"] == variant]
            if not cell:
                continue
            costs = [100 * (r["test"] - r["fp32_test"]) for r in cell]
            sd = statistics.stdev(costs) if len(costs) > 1 else 0.0
            lines.append(f"| {name} | {variant} | {100 * statistics.mean(r['test'] for r in cell):.2f} | "
                         f"{statistics.mean(costs):+.2f} ± {sd:.2f} | {sorted(r['seed'] for r in cell)} |")
    markdown = "\n".join(lines) + "\n"
    (results / f"int8_choices-{args.preset}.md").write_text(markdown)
    print(markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
