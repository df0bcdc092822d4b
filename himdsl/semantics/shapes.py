"""Shape rules, one per operator, on per-element shapes (tuples of ints).

    >>> broadcast((3, 1), (4,))
    (3, 4)
    >>> matmul((3,), (3, 5))
    (5,)

Each rule returns the result shape or raises `ShapeError` whose message names both
shapes; the checker turns it into a diagnostic at the offending span.
"""
from __future__ import annotations

import math

Shape = tuple[int, ...]


class ShapeError(Exception):
    """A shape mismatch; the message is user-facing."""


def show(shape: Shape) -> str:
    """`[3, 4]` for (3, 4), `scalar` for (), `unknown` for None (after an error)."""
    if shape is None:
        return "unknown"
    return "scalar" if shape == () else "[" + ", ".join(map(str, shape)) + "]"


def broadcast(*shapes: Shape) -> Shape:
    """numpy broadcasting of several shapes."""
    result: Shape = ()
    for shape in shapes:
        result = _broadcast_two(result, shape)
    return result


def _broadcast_two(a: Shape, b: Shape) -> Shape:
    width = max(len(a), len(b))
    pa, pb = (1,) * (width - len(a)) + a, (1,) * (width - len(b)) + b
    out = []
    for x, y in zip(pa, pb):
        if x != y and 1 not in (x, y):
            raise ShapeError(f"shapes {show(a)} and {show(b)} do not broadcast")
        out.append(max(x, y) if 1 in (x, y) else x)
    return tuple(out)


def matmul(a: Shape, b: Shape) -> Shape:
    """numpy.matmul: vector @ matrix, matrix @ vector, stacks of matrices."""
    if a == () or b == ():
        raise ShapeError(f"`@` needs arrays, got {show(a)} @ {show(b)}; use `*` for scalars")
    left = (1,) + a if len(a) == 1 else a
    right = b + (1,) if len(b) == 1 else b
    if left[-1] != right[-2]:
        raise ShapeError(f"{show(a)} @ {show(b)}: inner sizes {left[-1]} and {right[-2]} differ")
    batch = broadcast(left[:-2], right[:-2])
    out = batch + (left[-2], right[-1])
    if len(a) == 1:
        out = out[:-2] + out[-1:]
    if len(b) == 1:
        out = out[:-1]
    return out


def reduce_last(a: Shape, what: str) -> Shape:
    """Drop the last axis (sum, mean, prod, logsumexp, argmax)."""
    if a == ():
        raise ShapeError(f"`{what}` works over the last axis, but its argument is a scalar")
    return a[:-1]


def concat(shapes: list[Shape]) -> Shape:
    """Join along the last axis; the other axes must agree exactly."""
    if any(s == () for s in shapes):
        bad = next(s for s in shapes if s == ())
        raise ShapeError(f"`concat` joins arrays along their last axis, got a {show(bad)}; "
                         "use `stack` to build a vector of scalars")
    first = shapes[0]
    for other in shapes[1:]:
        if other[:-1] != first[:-1]:
            raise ShapeError(f"`concat` needs equal leading axes, got {show(first)} and {show(other)}")
    return first[:-1] + (sum(s[-1] for s in shapes),)


def stack(shapes: list[Shape]) -> Shape:
    """Broadcast the items, then add a new last axis."""
    return broadcast(*shapes) + (len(shapes),)


def reshape(a: Shape, target: Shape) -> Shape:
    """Same number of elements, new shape."""
    if math.prod(a) != math.prod(target):
        raise ShapeError(f"cannot reshape {show(a)} ({math.prod(a)} elements) to {show(target)} "
                         f"({math.prod(target)} elements)")
    return target


def index(a: Shape, items: list) -> Shape:
    """Constant indexing: an int drops its axis, a (start, stop, step) slice keeps it."""
    if len(items) > len(a):
        raise ShapeError(f"{len(items)} indices for an array of shape {show(a)}")
    out = []
    for axis, (size, item) in enumerate(zip(a, items)):
        if isinstance(item, int):
            if not -size <= item < size:
                raise ShapeError(f"index {item} is out of range for axis {axis} of size {size} "
                                 f"(shape {show(a)})")
        else:
            out.append(len(range(*slice(*item).indices(size))))
    return tuple(out) + a[len(items):]


def dense_input(a: Shape) -> int:
    """The number of input features a dense layer sees (a scalar is one feature)."""
    return a[-1] if a else 1
