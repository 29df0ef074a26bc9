"""fsize.py N CMD...: run CMD with every file it writes capped at N bytes (RLIMIT_FSIZE, SIGXFSZ
ignored), so the write that would pass N fails with EFBIG, as one fails with ENOSPC on a full disk."""

import os
import resource
import signal
import sys

n = int(sys.argv[1])
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
resource.setrlimit(resource.RLIMIT_FSIZE, (n, n))
os.execvp(sys.argv[2], sys.argv[2:])
