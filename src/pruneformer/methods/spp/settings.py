"""SPP's recipe section (``spp``): the search and the fine-tune of each cut."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from ...core.settings import Settings


class SPPConfig(Settings):
    """SPP's search (one linearized Bregman path over paired-dimension masks) and its extractions."""

    epochs: float = Field(1.0, gt=0, description="epochs of the search")
    kappa: float = Field(1.0, gt=0)
    nu: float = Field(1000.0, gt=0, description="coupling: ||a - gamma||^2 / (2 nu); DessiLBI uses 100, see README")
    lam: float = Field(1.0, ge=0, description="lambda, the threshold of shrink(z, lambda)")
    alpha: float = Field(25.0, gt=0, description="step size of the iteration (a and z); a unit enters near step lam*nu/alpha")
    granularity: Literal["shared", "head"] = Field("shared", description="qk/vo masks shared by all heads of a layer, or per head")
    train_weights: bool = Field(False, description="train the weights with the masks (default: frozen)")
    mask_optimizer: Literal["sgd", "adamw"] = Field("sgd", description="sgd: the DessiLBI step; adamw: the SPP code's")
    mask_lr: float = Field(1e-3, gt=0, description="AdamW learning rate of the masks (mask_optimizer adamw)")
    record_every: int = Field(1, ge=1, description="steps between gamma snapshots for the path plot")
    finetune_epochs: float = Field(1.0, ge=0, description="short fine-tune of each extracted model")
    distill: bool = Field(True, description="distil each cut's fine-tune (and its QAT) from the model it was cut "
                          "from, logits and hidden states with the mlpruning section's weights, as the L1 "
                          "retraining is (no attention term)")
