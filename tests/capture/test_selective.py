"""read_selected: a frame the grabber does not want is grabbed but never retrieved (converted)."""

from __future__ import annotations

import cv2
import numpy as np

from agent.capture.selective import SKIPPED, read_selected
from agent.capture.sources import SourceFrame


def _video(path, frames: int = 6) -> cv2.VideoCapture:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"MJPG"), 15.0, (64, 48))
    for i in range(frames):
        writer.write(np.full((48, 64, 3), 20 * i, np.uint8))
    writer.release()
    return cv2.VideoCapture(str(path), cv2.CAP_FFMPEG)


def test_unwanted_frames_are_skipped_unconverted_and_the_next_ones_still_come(tmp_path):
    cap = _video(tmp_path / "v.avi")
    answers = iter([False, True, False, True])
    got = [read_selected(cap, lambda: next(answers)) for _ in range(4)]
    assert [ok for ok, _ in got] == [True] * 4
    assert got[0][1] is SKIPPED and got[2][1] is SKIPPED
    assert abs(float(np.mean(got[1][1])) - 20) < 3 and abs(float(np.mean(got[3][1])) - 60) < 3  # frames 1 and 3
    ok, image = read_selected(cap, None)  # no predicate: a plain read of the next frame
    assert ok and abs(float(np.mean(image)) - 80) < 3
    read_selected(cap, None)
    assert read_selected(cap, lambda: True) == (False, None)  # the end: nothing grabbed
    cap.release()


def test_a_skipped_source_frame_has_no_image_and_is_not_corrupt():
    frame = SourceFrame(image=None, skipped=True)
    assert frame.image is None and not frame.corrupt
