"""One rank of the multi-process test (``tests/train/test_distributed.py`` launches it with torchrun).

It runs ``pipeline.run`` unchanged, interrupted once mid-ADMM and then resumed, and records after every
optimizer step a digest of the method's state (ADMM's Z and U, masks, rho), its current masks and the
targeted weights. The test compares those digests across ranks step by step: identical state on every rank
must hold at each step, not only after the broadcasts at epoch ends.

Usage: ``torchrun --standalone --nproc_per_node 2 tests/distributed_worker.py CONFIG.json``
"""

from __future__ import annotations

import hashlib
import json
import os
import sys

import torch

import pruneformer.runs.pipeline as pipeline
from pruneformer.runs.recipe import build_recipe
from pruneformer.train.checkpoint import split_tensors
from pruneformer.train.distributed import current


class Interrupt(Exception):
    """Stands for a killed run."""


def digest(method) -> str:
    """SHA-256 over the method's state tensors, its current masks and the targeted weights."""
    tensors = split_tensors(method.state_dict())[0]
    masks = method.current_masks()
    h = hashlib.sha256()
    for key in sorted(tensors):
        h.update(key.encode() + tensors[key].contiguous().numpy().tobytes())
    for key in sorted(masks):
        h.update(key.encode() + masks[key].contiguous().numpy().tobytes())
    for weight in method.weights:
        h.update(weight.detach().contiguous().numpy().tobytes())
    return h.hexdigest()


def run_structured(config: dict, rank: int) -> None:
    """MLPruning under torchrun: record a digest of the shrunk model each rank evaluates, and its report."""
    import pruneformer.runs.structured as structured

    digests: list[str] = []
    evaluate = structured.evaluate_splits

    def recording_evaluate(model, *args, **kwargs):
        h = hashlib.sha256()
        for key, value in sorted(model.state_dict().items()):
            h.update(key.encode() + value.detach().contiguous().numpy().tobytes())
        digests.append(h.hexdigest())
        return evaluate(model, *args, **kwargs)

    structured.evaluate_splits = recording_evaluate
    report = pipeline.run(build_recipe(config["recipe"]), progress=False, log=lambda _: None)
    world = current()
    out = {"rank": rank, "world": [world.rank, world.size], "digests": digests, "pruned": report["pruned"],
           "kept_per_layer": report["structured"]["kept_per_layer"], "remaining": report["structured"]["remaining_fraction"]}
    with open(os.path.join(config["record_dir"], f"rank{rank}.json"), "w") as handle:
        json.dump(out, handle)


def run_spp_search(config: dict, rank: int) -> None:
    """``spp-search`` under torchrun: record a digest of the path record each rank builds, and its summary."""
    from pruneformer.methods.spp.record import PathRecord
    from pruneformer.runs.solution_path import search

    digests: list[str] = []
    from_search = PathRecord.from_search

    def recording_from_search(cls, method, fingerprint):
        record = from_search(method, fingerprint)
        h = hashlib.sha256()
        for source in (record.entry, record.score):
            for key in sorted(source):
                h.update(key.encode() + source[key].contiguous().numpy().tobytes())
        digests.append(h.hexdigest())
        return record

    PathRecord.from_search = classmethod(recording_from_search)
    recipe = build_recipe(config["recipe"])
    summary = search(recipe, progress=False, log=lambda _: None)

    import pruneformer.runs.solution_path as solution_path

    cuts: list[str] = []
    cut = solution_path.cut

    def recording_cut(*args, **kwargs):
        shrunk, row = cut(*args, **kwargs)
        h = hashlib.sha256()
        for key, value in sorted(shrunk.state_dict().items()):
            h.update(key.encode() + value.detach().contiguous().numpy().tobytes())
        cuts.append(h.hexdigest())
        return shrunk, row

    solution_path.cut = recording_cut
    rows = solution_path.extract(recipe.output_dir, [0.5], finetune_epochs=0.5, progress=False, log=lambda _: None)
    world = current()
    out = {"rank": rank, "world": [world.rank, world.size], "digests": digests, "entered": summary["entered"],
           "dense": summary["dense"], "steps": summary["steps"], "cuts": cuts,
           "cut_scores": rows[0]["scores"], "finetune_steps": rows[0]["finetune_steps"]}
    with open(os.path.join(config["record_dir"], f"rank{rank}.json"), "w") as handle:
        json.dump(out, handle)


def main(config_path: str) -> None:
    config = json.loads(open(config_path).read())
    rank = int(os.environ["RANK"])
    if config.get("mode") == "structured":
        return run_structured(config, rank)
    if config.get("mode") == "spp-search":
        return run_spp_search(config, rank)
    records: list[list] = []
    build = pipeline.build_method

    def recording_build(phase, recipe, masks, steps=0):
        method = build(phase, recipe, masks, steps=steps)
        after = method.after_optimizer_step

        def after_optimizer_step(step: int) -> None:
            after(step)
            records.append([phase.name, step, digest(method)])

        method.after_optimizer_step = after_optimizer_step
        return method

    pipeline.build_method = recording_build
    recipe = build_recipe(config["recipe"])
    calls: list[int] = []

    def interrupt(step: int, loss: float) -> None:
        calls.append(step)
        if len(calls) == config["interrupt_after_calls"]:
            raise Interrupt()

    try:
        pipeline.run(recipe, progress=False, log=lambda _: None, callbacks=[interrupt])
    except Interrupt:
        pass
    report = pipeline.run(recipe, resume=True, progress=False, log=lambda _: None)
    world = current()
    out = {"rank": rank, "world": [world.rank, world.size], "records": records, "pruned": report["pruned"], "dense": report["dense"],
           "resumed_from": [p.get("resumed_from_step") for p in report["phases"]],
           "threads": torch.get_num_threads()}
    with open(os.path.join(config["record_dir"], f"rank{rank}.json"), "w") as handle:
        json.dump(out, handle)


if __name__ == "__main__":
    main(sys.argv[1])
