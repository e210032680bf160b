"""The benchmark videos: the synthetic conveyor scene (as the model was trained on it, 640x480) scaled to a
camera's frame size, in the formats cameras send.

* ``mp4v``: MPEG-4 Part 2 in .mp4 (OpenCV's own writer; what the benchmarks used so far);
* ``mjpg``: Motion JPEG in .avi (OpenCV's writer): every frame a JPEG, as MJPEG cameras send;
* ``h264``: H.264 in .mp4, encoded by GStreamer's ``x264enc`` through Debian's python3-gi (OpenCV's FFmpeg
  from PyPI decodes H.264 but has no encoder): no B-frames (``tune=zerolatency``), a key frame every second,
  about 0.2 bit per pixel, as an IP camera's main stream.
"""

from __future__ import annotations

import pathlib
import subprocess
import sys

CODECS = ("mp4v", "mjpg", "h264")
SYSTEM_PYTHON = "/usr/bin/python3"  # Debian's, with python3-gi (gi is not on PyPI)

_GST_TRANSCODE = """
import sys
import gi
gi.require_version("Gst", "1.0")
from gi.repository import Gst
Gst.init(None)
src, dst, fps, kbps = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
pipeline = Gst.parse_launch(
    f"filesrc location={src} ! avidemux ! jpegdec ! videoconvert ! video/x-raw,format=I420 ! "
    f"x264enc tune=zerolatency speed-preset=veryfast key-int-max={fps} bitrate={kbps} ! h264parse ! "
    f"mp4mux ! filesink location={dst}")
pipeline.set_state(Gst.State.PLAYING)
msg = pipeline.get_bus().timed_pop_filtered(Gst.CLOCK_TIME_NONE, Gst.MessageType.EOS | Gst.MessageType.ERROR)
pipeline.set_state(Gst.State.NULL)
if msg.type == Gst.MessageType.ERROR:
    err, debug = msg.parse_error()
    sys.exit(f"GStreamer: {err.message}")
"""


def write_video(path: pathlib.Path, frames: int, size: tuple[int, int], codec: str = "mp4v",
                fps: int = 15) -> pathlib.Path:
    """``frames`` frames of the moving conveyor at ``size`` in ``codec``; returns the file (its suffix follows
    the codec). SystemExit naming what is missing when this box cannot write it."""
    import cv2

    from agent.capture.synthetic import ConveyorScene

    if codec not in CODECS:
        raise SystemExit(f"codec {codec!r}: expected one of {', '.join(CODECS)}")
    out = path.with_suffix(".mp4" if codec == "mp4v" else ".avi")
    scene = ConveyorScene(seed=11)
    fourcc = "mp4v" if codec == "mp4v" else "MJPG"
    writer = cv2.VideoWriter(str(out), cv2.VideoWriter.fourcc(*fourcc), float(fps), size)
    if not writer.isOpened():
        raise SystemExit(f"OpenCV cannot write {fourcc} video to {out}")
    for _ in range(frames):
        image = scene.next_frame()[0]
        writer.write(image if image.shape[1::-1] == size else cv2.resize(image, size, interpolation=cv2.INTER_LINEAR))
    writer.release()
    if codec != "h264":
        return out
    h264 = path.with_name(path.stem + "-h264.mp4")
    kbps = max(500, int(size[0] * size[1] * fps * 0.2 / 1000))
    try:
        proc = subprocess.run([SYSTEM_PYTHON, "-c", _GST_TRANSCODE, str(out), str(h264), str(fps), str(kbps)],
                              capture_output=True, text=True, timeout=600)
    except FileNotFoundError:
        raise SystemExit(f"--codec h264 needs {SYSTEM_PYTHON} with python3-gi and GStreamer's x264enc "
                         "(apt-get install python3-gi gstreamer1.0-plugins-ugly gstreamer1.0-plugins-good)") from None
    if proc.returncode != 0 or not h264.is_file():
        raise SystemExit(f"--codec h264: GStreamer could not encode {out.name} (exit {proc.returncode}): "
                         f"{proc.stderr.strip()[-500:]}; it needs python3-gi, x264enc (gstreamer1.0-plugins-ugly), "
                         "avidemux and jpegdec (gstreamer1.0-plugins-good)")
    out.unlink()
    return h264


if __name__ == "__main__":  # python scripts/bench_pipeline_video.py OUT FRAMES WxH CODEC: one video, for a look
    w, h = (int(v) for v in sys.argv[3].split("x"))
    print(write_video(pathlib.Path(sys.argv[1]), int(sys.argv[2]), (w, h), sys.argv[4]))
