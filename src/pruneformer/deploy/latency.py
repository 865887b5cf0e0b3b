"""CPU latency of several models measured side by side: the numbers behind every speed-up pruneformer states.

Why interleaved rounds and the minimum: on a CPU shared with other jobs, interference only ever adds time,
so the models take turns inside every round (all see the same conditions) and the fastest round is the
closest to the machine's own speed; the median is kept beside it to show how noisy the run was.
"""

from __future__ import annotations

import os
import statistics
import time
from typing import Any, Mapping, Sequence

import torch
from torch import nn

from .hardware import hardware_record


def time_models(models: Mapping[str, nn.Module], shapes: Sequence[tuple[int, int]], rounds: int,
                vocab: int | None, images: bool = False) -> dict[str, Any]:
    """Fastest forward time (s) per model and ``(batch, length)`` shape, under ``"BxL"`` keys, and the
    medians under ``"median"``, and the machine under ``"hardware"`` (:func:`pruneformer.deploy.hardware.hardware_record`:
    int8 and fp32 speed depend on the CPU's instruction set). Inputs are random token ids without padding, the
    same for every model; with ``images`` a shape is ``(batch, side)`` and the input random pixels."""
    generator = torch.Generator().manual_seed(0)
    results: dict[str, Any] = {"hardware": hardware_record()}
    for batch, length in shapes:
        if images:
            inputs = {"pixel_values": torch.randn(batch, 3, length, length, generator=generator)}
        else:
            ids = torch.randint(min(1000, vocab - 1), vocab, (batch, length), generator=generator)
            inputs = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
        times: dict[str, list[float]] = {name: [] for name in models}
        with torch.inference_mode():
            for model in models.values():  # warm-up
                model(**inputs)
            for _ in range(rounds):
                for name, model in models.items():
                    t0 = time.perf_counter()
                    model(**inputs)
                    times[name].append(time.perf_counter() - t0)
        results[f"{batch}x{length}"] = {name: min(v) for name, v in times.items()}
        results.setdefault("median", {})[f"{batch}x{length}"] = {name: statistics.median(v) for name, v in times.items()}
    return results


def load_average() -> float | None:
    """The 1-minute load average, recorded before and after timing (None where the OS has none)."""
    try:
        return os.getloadavg()[0]
    except OSError:
        return None
