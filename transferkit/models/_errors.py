"""The errors the model modules share."""

__all__ = ["WeightsUnavailableError"]


class WeightsUnavailableError(RuntimeError):
    """Pretrained weights were asked for but could not be downloaded or read."""
