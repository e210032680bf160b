"""A real RTSP camera for tests: GStreamer's RTSP server streaming H.264 (or MJPEG: ``--codec mjpeg``).

Run with the system interpreter (gi is not on PyPI)::

    /usr/bin/python3 tests/capture/rtsp_server.py --port 8554 [--path /cam] [--width 320 --height 240]
                                                  [--codec h264|mjpeg]

Needs the Debian packages gir1.2-gst-rtsp-server-1.0 gstreamer1.0-rtsp
gstreamer1.0-plugins-base gstreamer1.0-plugins-good gstreamer1.0-plugins-ugly.
Prints ``READY rtsp://127.0.0.1:PORT/PATH`` on stdout once it listens; stops on
SIGTERM/SIGINT. Exit code 3 when GStreamer or a plugin is missing.
"""

from __future__ import annotations

import argparse
import signal
import sys

ENCODERS = {  # the stream's encoder and payloader
    "h264": "x264enc tune=zerolatency speed-preset=ultrafast key-int-max={fps} ! rtph264pay name=pay0 pt=96",
    # every frame a JPEG, as MJPEG IP cameras send (4:2:0: RTP/JPEG carries no other sampling)
    "mjpeg": "videoconvert ! video/x-raw,format=I420 ! jpegenc quality=85 ! rtpjpegpay name=pay0 pt=26",
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--path", default="/cam")
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument("--height", type=int, default=480)
    parser.add_argument("--fps", type=int, default=15)
    parser.add_argument("--codec", choices=sorted(ENCODERS), default="h264")
    args = parser.parse_args()

    try:
        import gi

        gi.require_version("Gst", "1.0")
        gi.require_version("GstRtspServer", "1.0")
        from gi.repository import GLib, Gst, GstRtspServer
    except (ImportError, ValueError) as exc:
        print(f"MISSING gi/GstRtspServer: {exc}", file=sys.stderr, flush=True)
        return 3

    Gst.init(None)
    encode = ENCODERS[args.codec].format(fps=args.fps)
    for element in ("videotestsrc", "videoconvert", *(e.split()[0] for e in encode.split(" ! ") if "/" not in e)):
        if Gst.ElementFactory.find(element) is None:
            print(f"MISSING GStreamer element {element}", file=sys.stderr, flush=True)
            return 3

    launch = (
        "( videotestsrc is-live=true pattern=ball "
        f"! video/x-raw,width={args.width},height={args.height},framerate={args.fps}/1 "
        f"! {encode} )"
    )
    server = GstRtspServer.RTSPServer()
    server.set_address("127.0.0.1")
    server.set_service(str(args.port))
    factory = GstRtspServer.RTSPMediaFactory()
    factory.set_launch(launch)
    factory.set_shared(True)
    server.get_mount_points().add_factory(args.path, factory)
    if server.attach(None) == 0:
        print(f"MISSING could not listen on 127.0.0.1:{args.port}", file=sys.stderr, flush=True)
        return 2

    loop = GLib.MainLoop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        GLib.unix_signal_add(GLib.PRIORITY_DEFAULT, sig, lambda *_: (loop.quit(), False)[1])
    print(f"READY rtsp://127.0.0.1:{args.port}{args.path}", flush=True)
    loop.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
