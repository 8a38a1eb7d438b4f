"""Label budgets: which training images keep their labels when a user has only ``K`` per class.

A user with few labels has many images and labels a handful of each class. :func:`balanced_draw` is that
draw: ``K`` images of every class, uniformly at random under a seeded generator, from a pool of training
images. The draw is nested: with the same seed, the ``K = 10`` images are the first 10 of the ``K = 100``
ones, so a label-efficiency curve adds labels to the same images instead of drawing new ones at each budget.
The same function draws the small validation set a user with that budget could afford (at most ``K`` per
class, from the validation split), so that no choice is made on more labels than the budget gives.
"""

from __future__ import annotations

import torch


def class_counts(labels: torch.Tensor, num_classes: int) -> list[int]:
    """How many of the (N,) ``labels`` fall in each of ``num_classes`` classes."""
    return torch.bincount(labels, minlength=num_classes).tolist()


def balanced_draw(labels: torch.Tensor, per_class: int, seed: int, num_classes: int | None = None,
                  cap: bool = False) -> list[int]:
    """Sorted positions in (N,) ``labels`` of ``per_class`` random images of every class.

    Each class's images are put in a random order drawn from one generator seeded with ``seed``, class by
    class, and the first ``per_class`` are kept: the order does not depend on ``per_class``, so draws are
    nested across budgets. ``cap`` keeps all of a class's images when it has fewer than ``per_class`` (for a
    validation set "of at most K per class"); without it, such a class is an error.

    Raises:
        ValueError: ``per_class`` < 1, or (without ``cap``) a class has fewer images than ``per_class``.
    """
    if per_class < 1:
        raise ValueError(f"--labels-per-class must be at least 1 (or unset for every label); got {per_class}")
    labels = labels.to(torch.int64)
    num_classes = int(labels.max()) + 1 if num_classes is None else num_classes
    counts = class_counts(labels, num_classes)
    short = [f"class {c} has {n}" for c, n in enumerate(counts) if n < per_class]
    if short and not cap:
        raise ValueError(f"--labels-per-class {per_class} needs {per_class} labeled training images of every "
                         f"class, but {', '.join(short)}; lower --labels-per-class")
    generator = torch.Generator().manual_seed(seed)
    chosen: list[int] = []
    for c in range(num_classes):
        members = torch.nonzero(labels == c).flatten()  # (n_c,) positions of class c
        order = torch.randperm(len(members), generator=generator)  # (n_c,)
        chosen += members[order[:per_class]].tolist()
    return sorted(chosen)
