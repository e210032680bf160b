"""The one redaction helper: every credential shape a camera, broker or Ollama URL carries is hidden,
wherever it sits in a text; text without secrets comes back unchanged."""

from __future__ import annotations

import pytest

from agent.redact import redact


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        # user:pass@ of an IP camera; the user name is half of the credential, hidden too
        ("rtsp://admin:s3cret@10.0.0.5:554/Streaming/Channels/101",
         "rtsp://***:***@10.0.0.5:554/Streaming/Channels/101"),
        # an unescaped '@' in the password: user info runs to the last '@' before the query
        ("rtsp://admin:p@ss@cam.local/live", "rtsp://***:***@cam.local/live"),
        # a bare token as user info
        ("https://tok3n@cam.local/video", "https://***@cam.local/video"),
        # credentials as path parameters, no '?' (Dahua/Hikvision RTSP paths)
        ("rtsp://cam/user=admin&password=s3cret&channel=1", "rtsp://cam/user=***&password=***&channel=1"),
        # query parameters, other keys stay
        ("http://cam/video.cgi?user=admin&pwd=s3cret&channel=1", "http://cam/video.cgi?user=***&pwd=***&channel=1"),
        # Foscam-style CGI login
        ("http://cam/videostream.cgi?loginuse=admin&loginpas=s3cret",
         "http://cam/videostream.cgi?loginuse=***&loginpas=***"),
        # ';'-separated parameters and a base64 'authbasic'
        ("rtsp://cam/realmonitor?channel=1;authbasic=YWRtaW46czNjcmV0", "rtsp://cam/realmonitor?channel=1;authbasic=***"),
        # tokens and keys with a prefix
        ("https://cam/live?access_token=s3cret&x-api-key=s3cret", "https://cam/live?access_token=***&x-api-key=***"),
        # a GStreamer pipeline: the rtsp URL inside it, and rtspsrc's user-id/user-pw properties
        ("gst:rtspsrc location=rtsp://admin:s3cret@10.0.0.5/live latency=0 ! decodebin",
         "gst:rtspsrc location=rtsp://***:***@10.0.0.5/live latency=0 ! decodebin"),
        ('gst:rtspsrc location="rtsp://10.0.0.5/live" user-id=admin user-pw="s3cret" ! decodebin',
         'gst:rtspsrc location="rtsp://10.0.0.5/live" user-id=*** user-pw="***" ! decodebin'),
        # Ollama behind a proxy with basic auth, inside an error message
        ("Ollama at http://ollama:s3cret@gpu1:11434 is unreachable (connection refused)",
         "Ollama at http://***:***@gpu1:11434 is unreachable (connection refused)"),
        # a URL quoted in a message, and one in JSON
        ("camera source 'rtsp://a:s3cret@h/x': no frame", "camera source 'rtsp://***:***@h/x': no frame"),
        ('{"reason":"rtsp://h/p?password=s3cret"}', '{"reason":"rtsp://h/p?password=***"}'),
        # an '@' in the query is not user info
        ("http://h/x?next=a@b&token=s3cret", "http://h/x?next=a@b&token=***"),
        # an authorization header's value, quoted in an error
        ("sent Authorization: Bearer abcdefgh12345678==", "sent Authorization: Bearer ***"),
        ("authorization=Basic YWRtaW46czNjcmV0", "authorization=*** ***"),
        # the words, not a header: unchanged
        ("basic checks passed; a bearer of bad news", "basic checks passed; a bearer of bad news"),
        # a log field that only looks like a key: 'auth' describes, it holds no secret
        ("msg='gateway listening' auth='tokens (2 clients)'", "msg='gateway listening' auth='tokens (2 clients)'"),
        # nothing to hide: unchanged
        ("rtsp://cam.local/live?channel=1&subtype=0", "rtsp://cam.local/live?channel=1&subtype=0"),
        ("level=info msg='gateway listening' parallel=2 keep_alive=30m", "level=info msg='gateway listening' "
         "parallel=2 keep_alive=30m"),
        ("clips/a.mp4", "clips/a.mp4"),
        ("", ""),
    ],
)
def test_redact(text: str, shown: str) -> None:
    assert redact(text) == shown
    assert redact(shown) == shown  # idempotent: a redacted text passes again unchanged
