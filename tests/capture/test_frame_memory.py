"""Frame-sized buffers come back from malloc's heap instead of fresh mappings once the grabbers tuned it
(agent.capture.frame_memory): a frame no longer costs the kernel hundreds of page faults."""

from __future__ import annotations

import platform
import subprocess
import sys
import textwrap

import pytest

from agent.capture.frame_memory import keep_frame_memory

pytestmark = pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="the thresholds are glibc's mallopt")

# in a fresh process (the thresholds are process-wide): minor page faults per 1280x960 BGR frame allocated and
# filled on a new thread (as a grabber decodes), after its first one, before and after keep_frame_memory()
_PROBE = textwrap.dedent("""
    import resource, threading
    import numpy as np
    from agent.capture.frame_memory import keep_frame_memory

    def faults_per_frame(n=30):
        out = []
        def run():
            np.empty((960, 1280, 3), np.uint8).fill(1)  # the thread's first frame grows its heap: not counted
            r0 = resource.getrusage(resource.RUSAGE_THREAD).ru_minflt
            for _ in range(n):
                frame = np.empty((960, 1280, 3), np.uint8)
                frame.fill(1)
                del frame
            out.append((resource.getrusage(resource.RUSAGE_THREAD).ru_minflt - r0) / n)
        thread = threading.Thread(target=run)
        thread.start()
        thread.join()
        return out[0]

    before = faults_per_frame()
    print(keep_frame_memory(), keep_frame_memory(), before, faults_per_frame())
""")


def test_frames_stop_faulting_in_fresh_pages_once_the_thresholds_are_set() -> None:
    proc = subprocess.run([sys.executable, "-c", _PROBE], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr[-2000:]
    applied, again, before, after = proc.stdout.split()
    assert applied == again == "True"  # set once; the second call answers the same
    assert float(after) < 2.0  # a 3.7 MB frame is 900 pages: now they are reused, not faulted in again
    assert float(before) > max(10.0, 10 * float(after))


def test_keeping_frame_memory_is_idempotent_in_this_process() -> None:
    assert keep_frame_memory() is keep_frame_memory() is True
