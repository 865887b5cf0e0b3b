"""The training loop: one phase of fine-tuning driven through a method's lifecycle hooks.

The loop knows nothing about which method it runs. It owns the optimizer, the LR schedule, the data order,
distillation, checkpoints (every ``checkpoint_every`` steps, atomic) and resume. The data order of each
epoch comes from a generator seeded with (seed, stream, epoch), so a resumed run sees exactly the batches
the uninterrupted run would have seen, and with the RNG state restored it ends with the same weights.

A phase can be one part of a longer schedule (``TrainSettings.span``): the phases of one pruning method
(ADMM, then masked fine-tuning, say) share one warmup + linear decay over the whole budget and one data
order, by global step. So no phase restarts at lr 0, the last phase is not starved of learning rate, and
a later phase does not replay the batches an earlier one saw.
"""

from __future__ import annotations

import contextlib
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
from torch import nn
from tqdm.auto import tqdm

from ..methods.base import PruningMethod
from .checkpoint import find_checkpoint, load_checkpoint, save_checkpoint, split_tensors
from .distill import Distiller
from .distributed import current as current_world
from .divergence import all_finite, divergence_error, likely_cause
from .evaluation import Collator, evaluate


@dataclass
class TrainSettings:
    """Optimisation settings of one phase (the recipe fills these in)."""

    epochs: float = 1.0
    lr: float = 5e-5
    batch_size: int = 32
    eval_batch_size: int = 128
    weight_decay: float = 0.01
    warmup_ratio: float = 0.06
    max_grad_norm: float | None = 1.0
    seed: int = 0
    log_every: int = 10
    checkpoint_every: int = 200
    eval_each_epoch: bool = True
    group_by_length: bool = True
    progress: bool = True
    #: (first, end) global steps of this phase within a schedule of ``schedule_steps`` steps; None: the
    #: phase is the whole schedule, ``ceil(epochs * steps_per_epoch)`` steps.
    span: tuple[int, int] | None = None
    schedule_steps: int | None = None
    #: which data order: phases of one schedule share a stream; the dense fine-tune uses another.
    data_stream: int = 0


@dataclass
class PhaseResult:
    """What a phase did: its curves and timings, for the report."""

    name: str
    steps: int = 0
    wall_time_s: float = 0.0
    mean_step_time_s: float = 0.0
    loss_curve: list[tuple[int, float]] = field(default_factory=list)
    evals: list[dict[str, Any]] = field(default_factory=list)
    method_history: list[dict[str, Any]] = field(default_factory=list)
    resumed_from_step: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def epoch_batches(lengths: list[int], batch_size: int, seed: int, epoch: int, group_by_length: bool,
                  stream: int = 0) -> list[list[int]]:
    """The batches of one epoch, a pure function of (seed, stream, epoch) so a resumed run sees the same ones.

    With ``group_by_length`` (HF Trainer's option of the same name) the shuffled examples are cut into
    chunks of 50 batches, each chunk is sorted by length, cut into batches, and the batch order shuffled:
    batches hold sentences of similar length, so dynamic padding wastes little compute, while every
    epoch still sees a different random grouping.
    """
    generator = torch.Generator().manual_seed(seed * 100_003 + epoch + stream * 7_919_000_003)
    order = torch.randperm(len(lengths), generator=generator).tolist()
    if not group_by_length:
        return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    chunk = 50 * batch_size
    batches: list[list[int]] = []
    for start in range(0, len(order), chunk):
        part = sorted(order[start : start + chunk], key=lambda i: -lengths[i])
        batches += [part[i : i + batch_size] for i in range(0, len(part), batch_size)]
    shuffle = torch.randperm(len(batches), generator=generator).tolist()
    return [batches[i] for i in shuffle]


def make_optimizer(model: nn.Module, lr: float, weight_decay: float,
                   extra_groups: Sequence[dict[str, Any]] = ()) -> torch.optim.AdamW:
    """AdamW with no weight decay on biases and LayerNorm weights (the BERT fine-tuning default), plus a
    method's own parameter groups (``PruningMethod.param_groups``, e.g. SPP's masks)."""
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        (no_decay if param.ndim < 2 or "LayerNorm" in name or "layer_norm" in name else decay).append(param)
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups + list(extra_groups), lr=lr)


def lr_factor(step: int, total: int, warmup: int) -> float:
    """Warmup then linear decay over ``total`` steps, as a multiple of the peak lr, for 0-based ``step``.

    Unlike transformers' ``get_linear_schedule_with_warmup`` no step runs at lr 0: the first warmup step
    runs at 1/warmup of the peak and the last step at 1/(total - warmup) of it.
    """
    if step < warmup:
        return (step + 1) / warmup
    return max(0.0, (total - step) / max(1, total - warmup))


def phase_steps(settings: TrainSettings, steps_per_epoch: int) -> tuple[int, int, int]:
    """(first global step, end global step, steps of the whole schedule) of the phase ``settings`` describes."""
    if settings.span is None:
        total = max(1, math.ceil(settings.epochs * steps_per_epoch))
        return 0, total, total
    first, end = settings.span
    return first, end, settings.schedule_steps or end


def schedule_spans(epochs: Sequence[float], steps_per_epoch: int) -> tuple[list[tuple[int, int]], int]:
    """Cut one schedule of ``sum(epochs)`` epochs into consecutive phases: ([(first, end), ...], total steps)."""
    total = max(1, math.ceil(sum(epochs) * steps_per_epoch))
    spans, done, first = [], 0.0, 0
    for index, part in enumerate(epochs):
        done += part
        end = total if index == len(epochs) - 1 else min(total, round(done * steps_per_epoch))
        spans.append((first, end))
        first = end
    return spans, total


@dataclass
class StepContext:
    """What one training step needs besides the batch: the loop builds it once per phase, and the
    benchmarks time :func:`train_step` with it, so the step they time is the step the loop runs."""

    model: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: Any
    method: PruningMethod | None = None
    distiller: Distiller | None = None
    max_grad_norm: float | None = 1.0
    world: Any = None
    trained: list[torch.Tensor] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.world = self.world or current_world()
        self.trained = self.trained or [p for group in self.optimizer.param_groups for p in group["params"]]


class StepDiverged(Exception):
    """A non-finite loss or gradient norm inside :func:`train_step` (the loop turns it into its message)."""


def train_step(ctx: StepContext, batch: dict[str, torch.Tensor], step: int, share: float = 1.0) -> float:
    """One optimizer step through the method's hooks; returns the global mean loss.

    Order: before_forward -> forward (+ distillation, + the method's loss term) -> backward -> gradient
    all-reduce -> after_backward -> clip -> before_optimizer_step -> optimizer and lr step ->
    after_optimizer_step. Raises :class:`StepDiverged` before the optimizer step if the loss or the
    gradient norm is not finite, so the weights stay the last finite ones.
    """
    method, distiller, world = ctx.method, ctx.distiller, ctx.world
    if method is not None:
        method.before_forward(step)
    out = ctx.model(**batch, **(distiller.output_flags if distiller is not None else {"output_hidden_states": False}))
    loss = distiller.loss(out, batch) if distiller is not None else out.loss
    extra = method.loss_term(step) if method is not None else None
    if extra is not None:
        loss = loss + extra
    value = world.sum(float(loss.detach()) * share)  # the global mean loss, as one process computes it
    if not math.isfinite(value):
        raise StepDiverged(f"the loss became {value}")
    (loss if share == 1.0 else loss * share).backward()
    world.all_reduce_gradients(ctx.trained)
    if method is not None:
        method.after_backward(step)
    norm = float(torch.nn.utils.clip_grad_norm_(ctx.model.parameters(), ctx.max_grad_norm or math.inf))
    if not math.isfinite(norm):
        raise StepDiverged(f"the gradient norm became {norm}")
    if method is not None:
        method.before_optimizer_step(step)
        if method.adds_gradient_after_clipping():
            grads = [g for g in method.grads if g is not None]
            norm = float(torch.linalg.vector_norm(torch.stack(torch._foreach_norm(grads)))) if grads else 0.0
            if not math.isfinite(norm):
                raise StepDiverged(f"the gradient norm became {norm}")
        method.set_learning_rate(ctx.optimizer.param_groups[0]["lr"])
    ctx.optimizer.step()
    ctx.scheduler.step()
    ctx.optimizer.zero_grad(set_to_none=True)
    if method is not None:
        method.after_optimizer_step(step)
    return value


def make_scheduler(optimizer: torch.optim.Optimizer, first: int, total: int, warmup_ratio: float):
    """The phase's slice of the schedule's lr curve (:func:`lr_factor`), starting at global step ``first``."""
    warmup = int(warmup_ratio * total)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda local: lr_factor(first + local, total, warmup))


def train_phase(
    model: nn.Module,
    train_dataset,
    collator: Collator,
    settings: TrainSettings,
    *,
    name: str = "train",
    method: PruningMethod | None = None,
    distiller: Distiller | None = None,
    dev_dataset=None,
    metrics: Sequence[str] = ("accuracy",),
    checkpoint_dir: Path | None = None,
    resume: bool = False,
    callbacks: Sequence[Callable[[int, float], None]] = (),
    trust_pickle: bool = False,
) -> PhaseResult:
    """Fine-tune ``model`` for ``settings.epochs`` epochs, calling ``method``'s hooks around each step.

    Under ``torchrun`` / ``accelerate launch`` every rank calls this with the same arguments: each takes its
    shard of every global batch, gradients are summed over ranks, and only rank 0 writes checkpoints
    (:mod:`pruneformer.train.distributed`). The run stops at the first non-finite loss, gradient norm or checkpoint,
    naming the likely cause and keeping the last good checkpoint (:mod:`pruneformer.train.divergence`).
    """
    world = current_world()
    examples = train_dataset.to_list() if hasattr(train_dataset, "to_list") else list(train_dataset)
    steps_per_epoch = math.ceil(len(examples) / settings.batch_size)
    first_step, end_step, schedule_total = phase_steps(settings, steps_per_epoch)
    total_steps = end_step - first_step  # this phase's steps; ``step`` below counts them from 0
    device = next(model.parameters()).device
    optimizer = make_optimizer(model, settings.lr, settings.weight_decay,
                               method.param_groups() if method is not None else ())
    scheduler = make_scheduler(optimizer, first_step, schedule_total, settings.warmup_ratio)
    result = PhaseResult(name=name)
    start_step = 0
    elapsed_before = 0.0
    found = find_checkpoint(checkpoint_dir) if (resume and checkpoint_dir) else None
    last_good: int | None = None  # step of the newest checkpoint on disk
    if found is not None:
        method_state, trainer_state = load_checkpoint(found, model, optimizer, scheduler, rank=world.rank,
                                                      trust_pickle=trust_pickle)
        if method is not None:
            method.load_state_dict(method_state)
        start_step = int(trainer_state["step"])
        elapsed_before = float(trainer_state.get("elapsed", 0.0))
        result.loss_curve = [tuple(x) for x in trainer_state.get("loss_curve", [])]
        result.evals = list(trainer_state.get("evals", []))
        result.resumed_from_step = last_good = start_step
    else:
        torch.manual_seed(settings.seed + world.rank)  # a dropout stream per rank; rank 0 = the single process
    world.broadcast_module(model)
    world.sync_method(method)

    model.train()
    step_times: list[float] = []
    running, running_n = 0.0, 0
    started = time.perf_counter()
    bar = tqdm(total=total_steps, initial=start_step, desc=name, disable=not (settings.progress and world.is_main),
               dynamic_ncols=True, leave=False)
    ctx = StepContext(model, optimizer, scheduler, method, distiller, settings.max_grad_norm, world)
    losses: list[float] = []

    def diverged(what: str, step: int):
        hint = method.divergence_hint() if method is not None else None
        cause = likely_cause(settings.lr, losses, step == start_step, hint)
        return divergence_error(what, step + 1, name, cause, checkpoint_dir, last_good)

    lengths = [len(example.get("input_ids", ())) for example in examples]  # images: one length, no grouping
    batches: list[list[int]] = []
    batches_epoch = -1
    for step in range(start_step, total_steps):
        epoch, index = divmod(first_step + step, steps_per_epoch)  # the schedule's epoch, by global step
        if epoch != batches_epoch:
            batches = epoch_batches(lengths, settings.batch_size, settings.seed, epoch, settings.group_by_length,
                                    settings.data_stream)
            batches_epoch = epoch
        ids = batches[index]
        local = world.shard(ids)
        share = len(local) / len(ids)  # this rank's share of the global mean loss
        if not local:  # fewer examples than ranks: run one at weight 0 so every rank joins the all-reduce
            local = ids[:1]
        batch = {k: v.to(device) for k, v in collator([examples[i] for i in local]).items()}

        t0 = time.perf_counter()
        try:
            value = train_step(ctx, batch, step, share)
        except StepDiverged as exc:
            raise diverged(str(exc), step) from None
        losses.append(value)
        step_times.append(time.perf_counter() - t0)

        running, running_n = running + value, running_n + 1
        if (step + 1) % settings.log_every == 0 or step + 1 == total_steps:
            result.loss_curve.append((step + 1, running / running_n))
            bar.set_postfix(loss=f"{running / running_n:.4f}")
            running, running_n = 0.0, 0
        bar.update(1)
        end_of_epoch = (first_step + step + 1) % steps_per_epoch == 0 or step + 1 == total_steps
        if end_of_epoch and method is not None:
            method.end_epoch(epoch)
            world.sync_method(method)  # rank 0's state everywhere, whatever a rank may have drifted by
        requested = method is not None and method.eval_requested()
        if dev_dataset is not None and (requested or (end_of_epoch and settings.eval_each_epoch)):
            context = method.eval_weights() if method is not None else contextlib.nullcontext()
            with context:
                scores = evaluate(model, dev_dataset, collator, metrics, settings.eval_batch_size)
            model.train()
            result.evals.append({"step": step + 1, "epoch": (first_step + step + 1) / steps_per_epoch, **scores})
            if method is not None:
                method.record_eval(scores)
        for callback in callbacks:
            callback(step + 1, value)
        if checkpoint_dir and settings.checkpoint_every and (step + 1) % settings.checkpoint_every == 0 \
                and step + 1 < total_steps:
            method_state = method.state_dict() if method is not None else None
            if not all_finite([*model.parameters(), *split_tensors(method_state)[0].values()]):
                raise diverged("the weights or the method's state became non-finite", step)
            rng_states = world.gather_rng()
            if world.is_main:
                save_checkpoint(
                    checkpoint_dir, model, optimizer, scheduler, method_state,
                    {"step": step + 1, "elapsed": elapsed_before + time.perf_counter() - started,
                     "loss_curve": result.loss_curve, "evals": result.evals},
                    rng_states=rng_states,
                )
            last_good = step + 1
    bar.close()
    result.steps = total_steps
    result.wall_time_s = elapsed_before + time.perf_counter() - started
    warm = step_times[3:] or step_times
    result.mean_step_time_s = sum(warm) / len(warm) if warm else 0.0
    if method is not None:
        result.method_history = list(method.history)
    return result

