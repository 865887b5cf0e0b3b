"""What a sparsity pattern is.

A pattern is the *constraint set* that every pruning method projects onto: N:M (keep ``n`` of every ``m``
consecutive weights along the input dimension, NVIDIA's convention), ``r x c : k`` blocks (keep ``k`` of
each ``r x c`` tile) and unstructured sparsity (keep a fraction of the weights, per layer or jointly across
all layers). This module knows nothing about models: it maps 2-D weight tensors ``[out_features,
in_features]`` to boolean masks.

Why the functions look the way they do:

* :meth:`Pattern.mask` returns the support of the *exact Euclidean projection* onto the pattern, i.e. it keeps
  the largest ``|w|`` in every group. ADMM's Z-update and SR-STE's forward pass are both exactly this
  projection, so getting it exactly right (and exactly the allowed count) matters for convergence proofs
  and for the hardware kernels that reject any group with one non-zero too many.
* Everything is vectorised (one sort / one selection over all groups at once) because SR-STE calls
  :meth:`Pattern.mask` on every training step for every layer.
* Ties are broken deterministically: among equal magnitudes the element with the lower index (row-major
  within the group; dictionary order then row-major for a global pattern) is kept. Runs are therefore
  reproducible across devices, and the kept count stays exact even for weights with many equal values
  (e.g. after quantisation or on all-zero layers).
* NaN magnitudes rank above everything else (as in :func:`torch.sort`) so the kept count stays exact and a
  diverged weight is kept visibly rather than silently hidden.
* Scores are computed on ``weight.detach().abs()`` in float32 (float64 stays float64): fp16/bf16 values are
  exactly representable in float32, so the order is unchanged, and CPU sort/selection kernels for half types
  are missing or slow.

The package: :mod:`.base` (the :class:`Pattern` contract and the exact top-k selections), :mod:`.kinds`
(N:M, blocks, unstructured, and :func:`compute_masks` for a whole model) and :mod:`.parse` (the strings).
"""

from .base import Pattern
from .kinds import BlockPattern, NMPattern, UnstructuredPattern, compute_masks
from .parse import ACCEPTED_FORMS, parse_pattern

__all__ = [
    "Pattern",
    "NMPattern",
    "BlockPattern",
    "UnstructuredPattern",
    "parse_pattern",
    "compute_masks",
    "ACCEPTED_FORMS",
]
