"""Knowledge distillation from the dense fine-tuned teacher (NxMTransformer combines it with ADMM).

loss = (1 - alpha) * task_loss + alpha * [T^2 * KL(softmax(t/T) || softmax(s/T))]
       + hidden_weight * mean over layers of MSE(student hidden state, teacher hidden state)
       + attention_weight * mean over layers of MSE(student attention probabilities, teacher's)

The attention term is MLPruning's (arXiv 2105.14636): it needs student and teacher with the same heads
per layer, e.g. a masked student (heads zeroed, not removed) or two shrunk models of one shape.

For regression the logit term is the MSE between student and teacher outputs.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class Distiller:
    """Combines the task loss with a frozen teacher's logits and, optionally, hidden states."""

    def __init__(
        self,
        teacher: nn.Module,
        temperature: float = 2.0,
        alpha: float = 0.5,
        hidden_weight: float = 0.0,
        attention_weight: float = 0.0,
    ) -> None:
        self.teacher = teacher.eval()
        for p in self.teacher.parameters():
            p.requires_grad_(False)
        self.temperature = float(temperature)
        self.alpha = float(alpha)
        self.hidden_weight = float(hidden_weight)
        self.attention_weight = float(attention_weight)

    @property
    def needs_hidden_states(self) -> bool:
        return self.hidden_weight > 0

    @property
    def needs_attentions(self) -> bool:
        return self.attention_weight > 0

    @property
    def output_flags(self) -> dict[str, bool]:
        """Keyword arguments the student's forward needs so that :meth:`loss` can use its outputs."""
        flags = {"output_hidden_states": self.needs_hidden_states}
        if self.needs_attentions:  # models in eager attention only: SDPA returns no probabilities
            flags["output_attentions"] = True
        return flags

    def loss(self, student_out, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        with torch.no_grad():
            inputs = {k: v for k, v in batch.items() if k != "labels"}
            teacher_out = self.teacher(**inputs, **self.output_flags)
        s, t = student_out.logits, teacher_out.logits
        if s.shape[-1] == 1:  # regression
            kd = F.mse_loss(s, t)
        else:
            temp = self.temperature
            kd = F.kl_div(F.log_softmax(s / temp, -1), F.log_softmax(t / temp, -1), log_target=True,
                          reduction="batchmean") * temp * temp
        total = (1 - self.alpha) * student_out.loss + self.alpha * kd
        if self.needs_hidden_states:
            pairs = list(zip(student_out.hidden_states, teacher_out.hidden_states))
            total = total + self.hidden_weight * sum(F.mse_loss(a, b) for a, b in pairs) / len(pairs)
        if self.needs_attentions:
            pairs = [(a, b) for a, b in zip(student_out.attentions, teacher_out.attentions) if a is not None and b is not None]
            if not pairs or any(a.shape != b.shape for a, b in pairs):
                raise ValueError("attention distillation needs attention probabilities of the same shape "
                                 "from student and teacher (eager attention, same heads per layer)")
            total = total + self.attention_weight * sum(F.mse_loss(a, b) for a, b in pairs) / len(pairs)
        return total
