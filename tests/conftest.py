import os

# First, before any test module imports numpy: tinycomp_kernels lets idle OpenBLAS and OpenMP workers sleep
# (kernels/thread_pools.py) only if it comes before the libraries start; later, they spin in this process
# and slow down every kernel after a matmul, in the tests here and in the command lines run in-process.
import tinycomp_kernels  # noqa: F401
from hypothesis import HealthCheck, settings

# deadline=None: the first call of a Numba kernel includes its compile.
settings.register_profile("default", deadline=None, max_examples=25,
                          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
settings.register_profile("ci", deadline=None, max_examples=25, derandomize=True,
                          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
settings.register_profile("thorough", deadline=None, max_examples=300,
                          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci" if os.environ.get("CI") else "default"))
