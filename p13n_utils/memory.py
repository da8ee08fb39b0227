"""Does a part of a notebook fit in this machine's memory? (mybinder.org gives about 2 GB.)

Every notebook makes the same decision before a part that needs much memory: estimate what the
part needs, compare it with what is available (:func:`p13n_utils.training.available_memory_bytes`:
``P13N_MEMORY_LIMIT_GB``, else the container's limit, else the machine's free memory), and either
run it or print why not and what is done instead. :func:`fits` is that decision, in one place::

    ok, reason = memory.fits(need, "full fine-tuning", "skipped; every other rung still runs")
    if ok:
        ...            # the part itself
    else:
        print(reason)  # "full fine-tuning needs 2.2 GB, 1.3 GB are available: skipped; ..."

:func:`fitting_batch` uses it to shrink a batch size (halving) until a batch fits;
:func:`dense_bytes`, :func:`logits_bytes` and :func:`activation_bytes` are the estimates, and
:func:`release` hands freed memory back to the operating system. The training loop
(:func:`p13n_utils.training.train_loop`) uses :func:`fits` to switch on gradient checkpointing
when a batch's activations do not fit. On a machine with enough memory nothing changes: every
part runs as it always did.
"""

from __future__ import annotations

import numpy as np

__all__ = ["fits", "fitting_batch", "dense_bytes", "logits_bytes", "activation_bytes", "release"]


def fits(need_bytes: float, part: str, instead: str, available: float | None = None) -> tuple[bool, str]:
    """Whether a part that needs ``need_bytes`` fits in the memory available, and if not why.

    Parameters
    ----------
    need_bytes : float
        The part's estimated peak memory on top of what the process already holds.
    part : str
        What the part is, for the reason (e.g. ``"full fine-tuning"``).
    instead : str
        What is done when it does not fit (e.g. ``"skipped; every other rung still runs"``).
    available : float, optional
        Bytes available; default :func:`p13n_utils.training.available_memory_bytes`.

    Returns
    -------
    ok : bool
        True when ``need_bytes <= available``.
    reason : str
        ``""`` when it fits; else ``"<part> needs X GB, Y GB are available: <instead>"``.
    """
    from .training import available_memory_bytes  # here: training imports this module

    if need_bytes < 0:
        raise ValueError(f"need_bytes must be >= 0, got {need_bytes}")
    available = available_memory_bytes() if available is None else available
    if need_bytes <= available:
        return True, ""
    return False, f"{part} needs {need_bytes / 1e9:.1f} GB, {available / 1e9:.1f} GB are available: {instead}"


def fitting_batch(batch_size: int, bytes_per_item: float, part: str,
                  available: float | None = None) -> tuple[int, str]:
    """The batch size to use: ``batch_size`` when a batch fits, else the largest halving of it that does.

    Returns ``(batch, reason)``: ``reason`` is ``""`` when ``batch_size`` fits, else says what a
    full batch needs and the smaller batch used instead (at least 1, even if that does not fit).
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if available is None:
        from .training import available_memory_bytes

        available = available_memory_bytes()
    ok, _ = fits(batch_size * bytes_per_item, part, "", available)
    if ok:
        return batch_size, ""
    batch = batch_size
    while batch > 1 and not fits(batch * bytes_per_item, part, "", available)[0]:
        batch //= 2
    _, reason = fits(batch_size * bytes_per_item, f"{part} at batch size {batch_size}",
                     f"batch size {batch} instead", available)
    return batch, reason


def dense_bytes(*shape: int, dtype=np.float32, copies: int = 1) -> int:
    """Bytes of ``copies`` dense arrays of ``shape`` (e.g. ``dense_bytes(n, n, copies=3)`` for
    an ``n × n`` Gram matrix, its inverse and the inverse's workspace)."""
    return int(copies * np.prod(shape, dtype=np.int64) * np.dtype(dtype).itemsize)


def logits_bytes(n_sequences: int, n_tokens: int, vocab_size: int, copies: int = 3) -> int:
    """Bytes of a causal LM's float32 logits for ``n_sequences`` of ``n_tokens`` (``copies``: the
    logits, their log-softmax and, in training, its gradient)."""
    return dense_bytes(n_sequences, n_tokens, vocab_size, dtype=np.float32, copies=copies)


def activation_bytes(model_config, n_tokens: int) -> int:
    """Float32 activations that backpropagation through ``n_tokens`` tokens (a whole batch)
    keeps, estimated from a decoder's shape: per token and layer about ``16 h + 4 i`` numbers
    (``h`` hidden size, ``i`` MLP width), plus three vocabulary-wide rows (logits, their
    log-softmax and its gradient). For SmolLM2-135M that is about 2.4 MB a token (measured: a
    LoRA step of 4 PersonaChat examples, 660 padded tokens, held about 1.5 GB)."""
    c = model_config
    per_layer = 16 * c.hidden_size + 4 * c.intermediate_size
    return int(4 * n_tokens * (c.num_hidden_layers * per_layer + 3 * c.vocab_size))


def release() -> None:
    """Give freed memory back to the operating system: a garbage collection, then glibc's
    ``malloc_trim`` (Linux). After a training loop the C heap keeps the freed activations
    (over 1 GB after a LoRA run of notebook 06), which counts against a container's limit."""
    import ctypes
    import gc

    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc (macOS, Windows, musl): nothing to trim
        pass
