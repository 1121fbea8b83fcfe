"""The one output type every saolctl model returns."""

from __future__ import annotations

from dataclasses import dataclass, field

from torch import Tensor


@dataclass(frozen=True)
class ModelOutput:
    """What a model computed for a batch; fields a method does not produce are None.

    ``logits`` is uniform across methods: ``softmax(logits)`` is the model's prediction
    (for SAOL, ``logits = log(y_hat)``). A method's own tensors beyond these fields go in ``extras``
    by name, so that a new method needs no new field.
    """

    method: str
    logits: Tensor  # (B, K)
    features: Tensor  # (B, C, H, W) last-stage features X^L
    gap_logits: Tensor | None = None  # (B, K) GAP-FC head: CAM's prediction, SAOL's auxiliary head
    attention: Tensor | None = None  # (B, H, W): SAOL's A (sums to 1 over space) or ABN's M in [0, 1]
    spatial_log_probs: Tensor | None = None  # (B, K, H, W) SAOL: log Y (Y sums to 1 over classes)
    log_attention: Tensor | None = None  # (B, H, W) SAOL: log A
    att_logits: Tensor | None = None  # (B, K) ABN attention-branch logits z_att
    class_maps: Tensor | None = None  # (B, K, h, w) ABN attention-branch class maps Q
    extras: dict[str, Tensor] = field(default_factory=dict)  # any other method's own tensors, by name

    @property
    def probs(self) -> Tensor:
        """Return the predicted class distribution (B, K)."""
        return self.logits.softmax(dim=1)

    @property
    def spatial_probs(self) -> Tensor | None:
        """Return SAOL's spatial class probabilities Y (B, K, H, W), or None."""
        return None if self.spatial_log_probs is None else self.spatial_log_probs.exp()
