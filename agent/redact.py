"""Hiding secrets in strings that are shown: the one helper for every place a URL,
camera source or error text goes to a person or another program.

Cameras and servers take credentials in many shapes, and each one leaks when the
string is logged, put in a status payload, a health reply, a metrics label or an
error detail. :func:`redact` hides, anywhere in a text:

* the user info of a URL (``rtsp://admin:pw@cam`` -> ``rtsp://***:***@cam``), also
  inside a GStreamer pipeline (``rtspsrc location=rtsp://...``) or an error message;
* the value of every ``key=value`` whose key names a credential, wherever it sits:
  query (``?user=admin&password=pw``), path (``/user=admin&password=pw&channel=1``,
  Dahua/Hikvision style), ``loginuse=``/``loginpas=`` (Foscam-style CGI), tokens and
  keys (``token=``, ``api_key=``, ``sig=``) or GStreamer properties (``user-pw=``);
* an HTTP authorization value: ``Bearer <token>``, ``Basic <base64>``.

Masking too much beats leaking: a ``key=value`` whose key merely ends like a
credential (``bypass=``) is hidden too. The length of a secret is not shown.
"""

from __future__ import annotations

import re

__all__ = ["MASK", "redact"]

MASK = "***"

# a URL with user info: scheme://USERINFO@ where USERINFO runs to the last '@' before
# the end of the URL (an unescaped '@' in a password must not end it early)
_URL = re.compile(r"(?P<scheme>\b[A-Za-z][A-Za-z0-9+.-]*://)(?P<rest>[^\s'\"<>`]*)")

# key names (or key endings) that carry a credential; matched case-insensitively
_SECRET_KEY = (
    r"(?:password|passwd|passphrase|pwd|pass|psw|loginpas|loginuse|login|user|username|usr|userid|"
    r"user-id|user-pw|user_pw|token|secret|apikey|api_key|api-key|key|sig|signature|authbasic|"
    r"authorization|credential|credentials|session|sid)"
)
# KEY=VALUE (also KEY = VALUE and KEY:"VALUE" in JSON is left to the caller); the key
# may have a prefix (access_token, x-api-key) but starts a word; the value runs to a
# separator: & ; # , whitespace, quotes or an escaped quote in repr/JSON text
_KEY_VALUE = re.compile(
    r"(?i)(?<![A-Za-z0-9])(?P<key>[A-Za-z0-9_.-]*?" + _SECRET_KEY + r")(?P<eq>\s*=\s*)"
    r"(?P<value>\"[^\"]*\"|'[^']*'|(?:[^\s&;#,'\"\\]|\\(?![\"'\\]))+)"
)


# an HTTP authorization value wherever it is quoted: "Bearer <token>", "Basic <base64>"
# (a Basic value must look like base64: a digit, '+', '/' or '=' in it, so "basic checks" stays text)
_SCHEME_TOKEN = re.compile(r"(?i)\b(?:(?P<scheme>bearer)(?P<gap>\s+)[A-Za-z0-9._~+/-]{8,}=*"
                           r"|(?P<scheme2>basic)(?P<gap2>\s+)(?=[A-Za-z]*[0-9+/=])[A-Za-z0-9+/]{8,}=*)")


def _mask_userinfo(match: re.Match[str]) -> str:
    rest = match.group("rest")
    # the authority ends at the first '/', '?' or '#' after the last '@' of the user info;
    # look for '@' only before the query/fragment so `?next=a@b` is not taken for user info
    head = re.split(r"[?#]", rest, maxsplit=1)[0]
    at = head.rfind("@")
    if at < 0:
        return match.group(0)
    userinfo = head[:at]
    masked = f"{MASK}:{MASK}" if ":" in userinfo else MASK
    return match.group("scheme") + masked + rest[at:]


def _mask_scheme_token(match: re.Match[str]) -> str:
    if match.group("scheme"):
        return match.group("scheme") + match.group("gap") + MASK
    return match.group("scheme2") + match.group("gap2") + MASK


def _mask_value(match: re.Match[str]) -> str:
    value = match.group("value")
    quoted = value[:1] in "\"'" and len(value) >= 2
    return match.group("key") + match.group("eq") + (value[0] + MASK + value[-1] if quoted else MASK)


def redact(text: str) -> str:
    """``text`` with every credential in it (URL user info, ``password=``-style values)
    replaced by ``***``. Safe on any string: text without secrets comes back unchanged."""
    if not text:
        return text
    out = _URL.sub(_mask_userinfo, text) if "://" in text else text
    out = _SCHEME_TOKEN.sub(_mask_scheme_token, out)
    if "=" in out:
        out = _KEY_VALUE.sub(_mask_value, out)
    return out
