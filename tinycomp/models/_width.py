"""Width scaling (the seed talk's "scale down the number of feature maps of each layer")."""


def scaled(channels, width):
    """``channels`` multiplied by ``width``, rounded, at least 1. Params and MACs scale by about width²."""
    return max(1, int(round(channels * width)))
