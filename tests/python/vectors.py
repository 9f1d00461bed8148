"""Random unit vectors for the Python tests (384 dimensions, MiniLM's size)."""

DIM = 384


def unit_vector(rng, dim=DIM):
    v = [rng.gauss(0, 1) for _ in range(dim)]
    n = sum(x * x for x in v) ** 0.5
    return [x / n for x in v]
