"""Run the conv kernels with the AVX-512 (wide) or the AVX2 tile set, whatever this CPU is."""
import contextlib

from tinycomp_kernels import conv_tiles


@contextlib.contextmanager
def tile_set(wide):
    """Inside the block the kernels choose their paths as on a CPU with (wide) or without AVX-512F."""
    saved, conv_tiles.WIDE_VECTORS = conv_tiles.WIDE_VECTORS, wide
    try:
        yield
    finally:
        conv_tiles.WIDE_VECTORS = saved
