"""Error types shared by several layers (data, architectures, evaluation), kept low so any of them can raise them."""

__all__ = ['ImageTooSmallError']


class ImageTooSmallError(ValueError):
    """An image is smaller than what it is used for: a dataset's patch, a network's window or a metric's crop."""
