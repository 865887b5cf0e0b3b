"""DINOv2: ViT's layer with layer scale after attention and FFN (a per-channel scale, cut with nothing: the
kept Linears keep their output size). Its position embeddings are interpolated to any image size
(``data.image_size``)."""

from .base import Family, register_family
from .vit import VIT_ROLES

DINOV2 = register_family(Family("dinov2", ("dinov2",), "encoder.layer", VIT_ROLES, attention_path="attention",
                                modality="image", cut="module-swap",
                                extra={"interpolates_positions": True}))
