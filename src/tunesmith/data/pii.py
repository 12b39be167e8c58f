"""Find personal data and secrets in text; replace them with typed placeholders (``<EMAIL>``).

Detectors run in a fixed order on the text left by the previous ones (a redacted span is not seen
twice). Each candidate found by a pattern is confirmed by a validator where one exists:

==============  ==============================================================================
EMAIL           address pattern
PHONE           candidate digit groups, confirmed by Google's libphonenumber (``phonenumbers``)
CREDIT_CARD     13-19 digits (spaces/dashes allowed), Luhn checksum
SSN             US ``AAA-GG-SSSS`` (invalid areas 000/666/9xx and zero groups excluded), or 9 digits after "SSN"
IBAN            country code + check digits + BBAN, ISO 13616 mod-97 checksum
IP_ADDRESS      IPv4 / IPv6, confirmed by :mod:`ipaddress`
SECRET          common token shapes (OpenAI/Anthropic ``sk-``, GitHub ``ghp_``, AWS ``AKIA``, Slack ``xox*``,
                Google ``AIza``, Hugging Face ``hf_``, Stripe, GitLab, JWTs, PEM private keys) and
                ``api_key=...``/``password: ...`` assignments
PERSON          names after explicit cues only ("my name is", "Name:", "Dear", sign-offs such as
                "Regards,\\nJane Doe"), with an optional title (Dr., Mr., ...): no offline library finds arbitrary names reliably, so names
                without such a cue are NOT found (see docs/data.md)
==============  ==============================================================================

Precision/recall on the labelled file ``tests/data/pii_labelled.jsonl`` are measured by
``tests/test_data_pii.py``.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable
from dataclasses import dataclass

ALL_TYPES = ("SECRET", "EMAIL", "IBAN", "CREDIT_CARD", "SSN", "IP_ADDRESS", "PHONE", "PERSON")


@dataclass(frozen=True, slots=True)
class Finding:
    type: str
    start: int
    end: int
    value: str


def luhn_ok(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = ord(ch) - 48
        if i % 2 == 1:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return total % 10 == 0


def iban_ok(value: str) -> bool:
    s = value.replace(" ", "").upper()
    if not 15 <= len(s) <= 34:
        return False
    s = s[4:] + s[:4]
    num = "".join(str(int(ch, 36)) for ch in s)
    return int(num) % 97 == 1


# --- patterns ------------------------------------------------------------------------------------

_SECRET = re.compile(
    r"-----BEGIN [A-Z ]*PRIVATE KEY-----[\s\S]*?-----END [A-Z ]*PRIVATE KEY-----"
    r"|\bsk-(?:proj-|ant-(?:api\d\d-)?)?[A-Za-z0-9_-]{20,}"
    r"|\bgh[pousr]_[A-Za-z0-9]{36,}\b|\bgithub_pat_[A-Za-z0-9_]{22,}"
    r"|\b(?:AKIA|ASIA)[0-9A-Z]{16}\b"
    r"|\bxox[abposr]-[A-Za-z0-9-]{10,}"
    r"|\bAIza[0-9A-Za-z_-]{35}"
    r"|\bhf_[A-Za-z0-9]{30,}\b"
    r"|\b[rs]k_(?:live|test)_[A-Za-z0-9]{16,}"
    r"|\bglpat-[A-Za-z0-9_-]{20,}"
    r"|\beyJ[A-Za-z0-9_-]{10,}\.eyJ[A-Za-z0-9_-]{10,}\.[A-Za-z0-9_-]{10,}"
)
_SECRET_ASSIGN = re.compile(
    r"(?i)\b(?:api[_ -]?key|secret(?:[_ -]?key)?|access[_ -]?token|auth[_ -]?token|token|password|passwd|pwd)\b[\"']?\s*[:=]\s*[\"']?"
    r"(?P<v>[A-Za-z0-9_\-/+=.!@#$%^&*]{8,})"
)
_EMAIL = re.compile(r"(?<![\w.+-])[A-Za-z0-9][A-Za-z0-9._%+-]*@(?:[A-Za-z0-9-]+\.)+[A-Za-z]{2,}\b")
_IBAN = re.compile(r"\b[A-Z]{2}\d{2}(?: ?[A-Z0-9]{4}){2,7}(?: ?[A-Z0-9]{1,3})?\b")
_CARD = re.compile(r"(?<![\d-])\d(?:[ -]?\d){12,18}(?![\d-])")
_SSN = re.compile(r"(?<![\d-])(?!000|666|9\d\d)\d{3}-(?!00)\d{2}-(?!0000)\d{4}(?![\d-])")
_SSN_CUE = re.compile(r"(?i)\b(?:ssn|social security(?: number| no\.?)?)\s*(?:is|:|#)?\s*(?P<v>(?!000|666|9\d\d)\d{3}[ -]?(?!00)\d{2}[ -]?(?!0000)\d{4})\b")
_IPV4 = re.compile(r"(?<![Vv]ersion )(?<![Bb]uild )(?<![Rr]elease )(?<![Vv]er )(?<![\w.])(?:\d{1,3}\.){3}\d{1,3}(?![\w.]|\.\d)")
_IPV6 = re.compile(r"(?<![\w:])(?:[0-9A-Fa-f]{0,4}:){2,7}[0-9A-Fa-f]{0,4}(?![\w:])")
_PHONE = re.compile(r"(?<![\w+-])(?:\+\d{1,3}[ .-]?)?(?:\(\d{1,4}\)[ .-]?)?\d{1,4}(?:[ .-]?\d{1,4}){1,5}(?![\w-])")
_NAME = r"(?P<v>(?:(?:Dr|Mr|Mrs|Ms|Prof)\.?[ ])?[A-Z][a-z'\-]+(?:[ ](?:[A-Z]\.|[A-Z][a-z'\-]+)){0,2})"
_PERSON = re.compile(
    r"(?:\b(?:[Mm]y name is|[Mm]y name's|[Nn]ame:|[Cc]ustomer:|[Ss]igned,?|[Dd]ear)\s+|"
    r"\b(?:[Rr]egards|[Bb]est|[Tt]hanks|[Tt]hank you|[Cc]heers|[Ss]incerely|[Bb]est wishes),?[ \t]*\n[ \t]*)"
    + _NAME
)
_NOT_NAMES = {
    "Sir", "Madam", "Team", "Customer", "Support", "All", "Friend", "Friends", "Colleagues", "Everyone", "Valued",
    "Hiring", "Manager", "Admin", "User", "Client", "Member", "Partner", "The", "Thanks", "Regards", "Best",
}

_DEL_DIGITS = str.maketrans("", "", "0123456789")


def _n_digits(s: str) -> int:
    if s.isascii():  # bytes.translate is much faster than str.translate
        b = s.encode("ascii")
        return len(b) - len(b.translate(None, b"0123456789"))
    return len(s) - len(s.translate(_DEL_DIGITS))
_ASSIGN_CUES = ("key", "secret", "token", "pass", "pwd")
_PERSON_CUES = ("name", "customer:", "signed", "dear", "regards", "best", "thank", "cheers", "sincerely")
_SSN_CUES = ("ssn", "social")
_ANY_HINT = re.compile(  # on lower-cased text; every other hit is a secret-token cue
    "sk-|gh[pousr]_|github_pat_|akia|asia|xox|aiza|hf_|k_live_|k_test_|glpat-|eyj|private key|"
    + "|".join(_ASSIGN_CUES + _PERSON_CUES + _SSN_CUES)
)
_CUE_KIND = {**dict.fromkeys(_ASSIGN_CUES, "A"), **dict.fromkeys(_PERSON_CUES, "P"), **dict.fromkeys(_SSN_CUES, "N")}


def _phone_validator(region: str) -> Callable[[str], bool]:
    try:
        import phonenumbers
    except ImportError:  # pragma: no cover - phonenumbers is a dependency
        return lambda s: sum(c.isdigit() for c in s) >= 10

    def ok(candidate: str) -> bool:
        if sum(c.isdigit() for c in candidate) < 7:
            return False
        try:
            num = phonenumbers.parse(candidate, region)
        except phonenumbers.NumberParseException:
            return False
        return phonenumbers.is_valid_number(num)

    return ok


def _ip_ok(s: str) -> bool:
    try:
        ipaddress.ip_address(s)
    except ValueError:
        return False
    return True


class PiiScanner:
    """Find (and optionally replace) PII; counts per type accumulate in :attr:`counts`."""

    def __init__(self, types: list[str] | tuple[str, ...] = ALL_TYPES, *, phone_region: str = "US"):
        unknown = set(types) - set(ALL_TYPES)
        if unknown:
            from tunesmith.errors import ConfigError

            raise ConfigError(f"data.pii.types has unknown types {sorted(unknown)}", hint=f"choose from {', '.join(ALL_TYPES)}")
        self.types = [t for t in ALL_TYPES if t in set(types)]
        self.counts: dict[str, int] = dict.fromkeys(self.types, 0)
        self.rows_with_pii = 0
        self._phone_ok = _phone_validator(phone_region)

    # Each step: (type, pattern, group, validator, gate). A gate is a cheap test (digit count,
    # character, or the set of cue categories found by one scan of the lower-cased text) that must
    # pass before the regex runs: most texts skip most regexes.
    def _steps(self):
        steps = []
        t = set(self.types)
        if "SECRET" in t:
            steps.append(("SECRET", _SECRET, 0, None, lambda w, cues, nd: "S" in cues))
            steps.append(("SECRET", _SECRET_ASSIGN, "v", _secret_assign_ok, lambda w, cues, nd: "A" in cues))
        if "EMAIL" in t:
            steps.append(("EMAIL", _EMAIL, 0, None, lambda w, cues, nd: "@" in w))
        if "IBAN" in t:
            steps.append(("IBAN", _IBAN, 0, iban_ok, lambda w, cues, nd: nd >= 10))
        if "CREDIT_CARD" in t:
            steps.append(("CREDIT_CARD", _CARD, 0, lambda v: luhn_ok(re.sub(r"\D", "", v)), lambda w, cues, nd: nd >= 13))
        if "SSN" in t:
            steps.append(("SSN", _SSN, 0, None, lambda w, cues, nd: nd >= 9 and "-" in w))
            steps.append(("SSN", _SSN_CUE, "v", None, lambda w, cues, nd: nd >= 9 and "N" in cues))
        if "IP_ADDRESS" in t:
            steps.append(("IP_ADDRESS", _IPV4, 0, _ip_ok, lambda w, cues, nd: nd >= 4 and w.count(".") >= 3))
            steps.append(("IP_ADDRESS", _IPV6, 0, lambda v: v.count(":") >= 2 and _ip_ok(v), lambda w, cues, nd: "::" in w or w.count(":") >= 5))
        if "PHONE" in t:
            steps.append(("PHONE", _PHONE, 0, self._phone_ok, lambda w, cues, nd: nd >= 7))
        if "PERSON" in t:
            steps.append(("PERSON", _PERSON, "v", lambda v: not any(w in _NOT_NAMES for w in v.split()), lambda w, cues, nd: "P" in cues))
        return steps

    def scan(self, text: str, *, redact: bool) -> tuple[str, list[Finding]]:
        """Return (text with placeholders if ``redact``, findings as spans of the *original* text)."""
        findings: list[Finding] = []
        if len(text) < 6:
            return text, findings
        work = text
        nd = _n_digits(text)
        cues = {_CUE_KIND.get(h, "S") for h in _ANY_HINT.findall(text.lower())}  # "S" secret, "A" assignment, "N" SSN, "P" person
        if nd < 4 and not cues and "@" not in text and ":" not in text:
            return text, findings  # nothing any detector could match: the common case
        # Found spans are masked in ``work`` with same-length NULs, so spans stay aligned with the
        # original text and later detectors do not see earlier findings.
        for kind, pattern, group, validator, gate in self._cached_steps:
            if not gate(work, cues, nd):
                continue
            new_spans = []
            for m in pattern.finditer(work):
                s, e = m.span(group)
                value = work[s:e]
                if "\x00" in value:
                    continue
                if validator is not None and not validator(value):
                    continue
                new_spans.append((s, e))
                findings.append(Finding(kind, s, e, text[s:e]))
            if new_spans:
                parts, last = [], 0
                for s, e in new_spans:
                    parts.append(work[last:s])
                    parts.append("\x00" * (e - s))
                    last = e
                parts.append(work[last:])
                work = "".join(parts)
                nd = _n_digits(work)
        if not findings:
            return text, findings
        findings.sort(key=lambda f: f.start)
        for f in findings:
            self.counts[f.type] += 1
        if not redact:
            return text, findings
        out, last = [], 0
        for f in findings:
            out.append(text[last : f.start])
            out.append(f"<{f.type}>")
            last = f.end
        out.append(text[last:])
        return "".join(out), findings

    @property
    def _cached_steps(self):
        steps = getattr(self, "_steps_cache", None)
        if steps is None:
            steps = self._steps_cache = self._steps()
        return steps

    def apply(self, record: dict, *, redact: bool) -> int:
        """Scan every text of a record in place; returns the number of findings."""
        n = 0
        if "text" in record and "messages" not in record:
            record["text"], found = self.scan(record["text"], redact=redact)
            n += len(found)
        else:
            for m in record["messages"]:
                m["content"], found = self.scan(m["content"], redact=redact)
                n += len(found)
        if n:
            self.rows_with_pii += 1
        return n


def _secret_assign_ok(value: str) -> bool:
    # an assigned secret has letters and digits, or is long; "password: please reset" is not one
    has_alpha = any(c.isalpha() for c in value)
    has_digit = any(c.isdigit() for c in value)
    return (has_alpha and has_digit) or len(value) >= 20
