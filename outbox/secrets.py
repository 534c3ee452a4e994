"""Find and hide passwords in any text that might quote a DSN, whatever shape it is in.

One mechanism for every message and log line: ``shipper.dsn.redact_dsn`` and the command
lines' last line of defence both come here. It does not parse: a DSN with a typo
(``postgresql:/u:pw@h``, ``u:pw@h``, ``postgres//u:pw@h``) is exactly the one a parser rejects
and an error message then quotes verbatim. Anything shaped ``user:password@`` loses its
password, and so does any ``password=`` in key=value or query-string form.
"""

from __future__ import annotations

import re

__all__ = ["scrub_secrets", "secrets_in"]

# ``[scheme:][//]user:password@``: the user part holds no ``:``/``/``/``@``; the password runs to
# the last ``@`` before a blank or a quote (a password may hold ``@``, ``/`` and ``:`` unencoded).
_SCHEME = r"(?:[A-Za-z][A-Za-z0-9+.-]*:?/+)"
_USERINFO = re.compile(
    rf"(?P<head>{_SCHEME}[^\s:/@'\"=]*:|(?<![A-Za-z0-9+.-])[^\s:/@'\"=]*:(?!/))(?P<secret>[^\s'\"]*)@"
)
_KEY_VALUE = re.compile(r"(?P<head>\bpassword\s*=\s*)(?P<secret>'(?:[^'\\]|\\.)*'|[^\s&'\",;]+)", re.IGNORECASE)


def secrets_in(text: str) -> list[str]:
    """Return the passwords ``text`` holds, as :func:`scrub_secrets` would hide them."""
    found = [m["secret"] for m in _USERINFO.finditer(text)] + [m["secret"] for m in _KEY_VALUE.finditer(text)]
    return [s for s in found if s and s != "***"]


def scrub_secrets(text: str) -> str:
    """Replace every password in ``text`` (``user:password@`` or ``password=...``) with ``***``."""
    text = _USERINFO.sub(lambda m: f"{m['head']}***@", text)
    return _KEY_VALUE.sub(lambda m: f"{m['head']}***", text)
