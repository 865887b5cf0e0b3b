"""Knowledge distillation from the dense fine-tuned teacher (NxMTransformer combines it with ADMM).

loss = (1 - alpha) * task_loss + alpha * [T^2 * KL(softmax(t/T) || softmax(s/T))]
       + hidden_weight * mean over layers of MSE(student hidden state, teacher hidden state)

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
    ) -> None:
        self.teacher = teacher.eval()
        for p in self.teacher.parameters():
            p.requires_grad_(False)
        self.temperature = float(temperature)
        self.alpha = float(alpha)
        self.hidden_weight = float(hidden_weight)

    @property
    def needs_hidden_states(self) -> bool:
        return self.hidden_weight > 0

    def loss(self, student_out, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        with torch.no_grad():
            inputs = {k: v for k, v in batch.items() if k != "labels"}
            teacher_out = self.teacher(**inputs, output_hidden_states=self.needs_hidden_states)
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
        return total
