"""Peak memory of a training step, measured the same way in tinycomp's process and PyTorch's: the
peak resident set above the process's size just before the first step (Linux: VmHWM is reset
through /proc/self/clear_refs and read back from /proc/self/status; elsewhere the lifetime peak
from getrusage, an upper bound). Imports nothing but the standard library, for both sides."""
import resource
import sys


def _status_kib(field):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise KeyError(field)


class StepMemory:
    """``start()`` just before the first step, ``peak_above_start()`` after the last: bytes."""

    def start(self):
        self.exact = sys.platform.startswith("linux")
        if self.exact:
            try:
                with open("/proc/self/clear_refs", "w") as f:
                    f.write("5")  # reset the peak (VmHWM) to the current resident set
                self.rss0 = _status_kib("VmRSS") * 1024
            except OSError:
                self.exact = False
        if not self.exact:
            self.rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * (1 if sys.platform == "darwin" else 1024)
        return self

    def peak_above_start(self):
        if self.exact:
            return _status_kib("VmHWM") * 1024 - self.rss0
        scale = 1 if sys.platform == "darwin" else 1024
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale - self.rss0
