"""The training loader's batches moved to the device and prepared while the previous step runs.

``datasets.train.prefetch_mode: cuda`` wraps each epoch's loader iterator in a :class:`Prefetcher`.
On CUDA, each batch is copied to the GPU with non-blocking copies (from pinned memory, see
``pin_memory``) and prepared (the model's on-GPU training degradation) on a side stream, so the copy
and the degradation run while the GPU is still busy with the previous step, and the host never waits
for the training step to finish before it can draw the next degradation. The training stream waits
for the side stream on the GPU only (an event, no host synchronisation).

A batch is fetched and prepared only when the loop asks for the next one, after it has launched the
current step and written any checkpoint: nothing about batch k+1 (its sampler position, the
degradation's random stream) has moved when the checkpoint of step k is written, so a resumed run is
the same as an uninterrupted one, with or without prefetching. On the CPU (no side stream) the
prefetcher yields exactly the batches of the plain loader, in the same order, prepared the same way.
"""
import torch

__all__ = ['Prefetcher', 'batch_to_device']


def batch_to_device(batch, device, non_blocking=True):
    """``batch`` (tensors, or dicts/lists/tuples of them) with every tensor on ``device``; other values as they are."""
    if torch.is_tensor(batch):
        return batch.to(device, non_blocking=non_blocking)
    if isinstance(batch, dict):
        return {k: batch_to_device(v, device, non_blocking) for k, v in batch.items()}
    if isinstance(batch, (list, tuple)) and any(torch.is_tensor(v) for v in batch):
        return type(batch)(batch_to_device(v, device, non_blocking) for v in batch)
    return batch


def _tensors(value):
    if torch.is_tensor(value):
        yield value
    elif isinstance(value, dict):
        for v in value.values():
            yield from _tensors(v)
    elif isinstance(value, (list, tuple)):
        for v in value:
            yield from _tensors(v)


class Prefetcher:
    """Iterate batches on ``device``, each passed through ``prepare`` (e.g. the model's degradation).

    ``Prefetcher(device, prepare)(iterator)`` yields ``prepare(batch_to_device(batch))`` for each batch
    of ``iterator``. On CUDA the copy and ``prepare`` run on a side stream while the caller's previous
    step runs on the current stream; the yielded tensors are safe to use on the current stream.
    """

    def __init__(self, device, prepare=None):
        self.device = torch.device(device)
        self.prepare = prepare
        self.stream = torch.cuda.Stream(self.device) if self.device.type == 'cuda' else None

    def __call__(self, iterator):
        first = True
        for batch in iterator:
            yield self.load(batch, first)
            first = False

    def load(self, batch, first=True):
        """One batch on the device and prepared; on CUDA the current stream waits for it (on the GPU).

        ``first``: the side stream also waits for everything queued on the current stream so far (state the
        preparation reads may have been set there, e.g. a resumed degradation's training-pair pool). Later
        batches skip that wait, which would serialise the preparation behind the step it should overlap:
        between batches only the preparation itself updates such state, on the side stream.
        """
        if self.stream is None:
            batch = batch_to_device(batch, self.device)
            return self.prepare(batch) if self.prepare is not None else batch
        consumer = torch.cuda.current_stream(self.device)
        if first:
            self.stream.wait_stream(consumer)
        with torch.cuda.stream(self.stream):
            batch = batch_to_device(batch, self.device)
            if self.prepare is not None:
                batch = self.prepare(batch)
        consumer.wait_stream(self.stream)
        for tensor in _tensors(batch):
            if tensor.is_cuda:
                # made on the side stream, used and freed on the consumer's: keep the allocator from
                # reusing the memory before the consumer's work on it has run
                tensor.record_stream(consumer)
        return batch
