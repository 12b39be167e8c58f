"""Find personal data and secrets in records; replace them with numbered, typed placeholders.

Detectors run in a fixed order on the text left by the previous ones (a span is not found twice).
Each candidate found by a pattern is confirmed by a validator where one exists:

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
PERSON          names after explicit cues only: "my name is", "Name:", "Dear", "Hi ...,", sign-offs
                ("Regards,\\nJane Doe"), mail headers, JSON keys such as "customer_name", and "this is" /
                "I'm" followed by a full name. A "name" made of a role, department, company or common word
                ("Dear Accounts Payable", "Hi Team", "This is Urgent") is not one. No offline library finds
                arbitrary names reliably, so names without a cue are NOT found
==============  ==============================================================================

A record is handled as a whole (:meth:`PiiScanner.apply`): once an entity is found anywhere in it,
its other occurrences in every message are found too (for a name, also its first or last name
alone), and the same entity gets the same placeholder everywhere: ``<PERSON_1>`` in the prompt is
``<PERSON_1>`` in the answer, so a model trained on it learns to copy the placeholder, not to invent
a value. Numbers count per type and record, in order of first appearance.

Precision/recall per type on the labelled file ``tests/fixtures/pii_labelled.jsonl`` are measured by
``tests/test_data/test_data_pii.py`` (table in docs/data.md).
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from tunesmith.data.records import map_call_argument_strings
from typing import Any

ALL_TYPES = ("SECRET", "EMAIL", "IBAN", "CREDIT_CARD", "SSN", "IP_ADDRESS", "PHONE", "PERSON")
# Found and counted but left in the text unless configured otherwise (data.pii.report_only): names are
# found by cue only, and a wrong name placeholder damages the task (docs/data.md, "PII").
DEFAULT_REPORT_ONLY = ("PERSON",)


@dataclass(frozen=True, slots=True)
class Finding:
    type: str
    start: int
    end: int
    value: str  # the text found
    entity: str = ""  # the value that names its entity when not ``value`` ("Maria Garcia" for a "Maria")

    @property
    def ref(self) -> str:
        return self.entity or self.value


@dataclass
class PiiTally:
    """What a scanner found, summed over records; tallies of worker processes are summed with :meth:`add`."""

    counts: dict[str, int] = field(default_factory=dict)  # type -> occurrences found
    rows_with_pii: int = 0
    rows_with_pii_in_answer: int = 0  # rows with an entity in an assistant turn
    rows_answer_redacted: int = 0  # ... that redaction replaced there: the model is trained to write the placeholder

    def add(self, other: PiiTally) -> None:
        for k, v in other.counts.items():
            self.counts[k] = self.counts.get(k, 0) + v
        self.rows_with_pii += other.rows_with_pii
        self.rows_with_pii_in_answer += other.rows_with_pii_in_answer
        self.rows_answer_redacted += other.rows_answer_redacted

    def summary(self, cfg: Any) -> dict[str, Any]:
        """The ``pii`` block of stats.json for a :class:`~tunesmith.data.config.PiiConfig`."""
        active = cfg.mode != "off"
        return {
            "mode": cfg.mode,
            "redacted_types": [t for t in cfg.types if t not in cfg.report_only] if cfg.mode == "redact" else [],
            "report_only": [t for t in cfg.types if t in cfg.report_only] if active else [],
            "counts": {t: self.counts.get(t, 0) for t in cfg.types} if active else {},
            "rows_with_pii": self.rows_with_pii,
            "rows_with_pii_in_answer": self.rows_with_pii_in_answer,
            "rows_answer_redacted": self.rows_answer_redacted,
        }


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

# --- person names ---------------------------------------------------------------------------------
# A name: an optional title, then one to three capitalised words or initials ("Anna K. Lee", "Sean
# O'Brien", "Jean-Luc Moreau", "José Álvarez"). Latin-1 and Latin Extended-A letters count as letters.
_UP, _LO = "A-ZÀ-ÖØ-Þ\u0100-\u017f", "a-zß-öø-ÿ\u0100-\u017f"
_TITLES = {"Dr", "Mr", "Mrs", "Ms", "Miss", "Mx", "Prof", "Professor"}
_WORD = rf"(?:[{_UP}][{_LO}]?['’])?[{_UP}][{_LO}]+(?:[{_UP}][{_LO}]+)?(?:-[{_UP}][{_LO}]+)?"
_NAME = rf"(?P<v>(?:(?:{'|'.join(sorted(_TITLES, key=len, reverse=True))})\.?[ ])?{_WORD}(?:[ ](?:[A-Z]\.|{_WORD})){{0,2}})(?![\w@])"


def _cues(*phrases: str) -> str:
    """A regex alternation of plain literals, each also with a capital first letter. Every cue pattern
    starts with one: the regex engine then skips ahead by first character, which matters because cue
    words are common and these patterns run on many texts (the word boundary before a cue is checked
    in :func:`_person_ok`)."""
    variants = {v for p in phrases for v in (p, p[0].upper() + p[1:])}
    return "(?:" + "|".join(re.escape(v) for v in sorted(variants, key=len, reverse=True)) + ")"


_SIGN_OFFS = ("regards", "best", "best wishes", "warm wishes", "warmest wishes", "thanks", "thanks again", "many thanks",
              "thank you", "cheers", "sincerely", "yours", "yours truly", "yours sincerely", "yours faithfully", "respectfully")
# Strong cues take a single word as a name; weak ones ("this is", "I'm") need a full name (two words or a
# title) or a single word followed by "from/at/with/here/speaking/calling" ("this is Tom from billing").
_PERSON_STRONG = re.compile(
    _cues("my name is ", "my name's ", "my name’s ", "dear ", "signed ", "signed, ", "signed by:", "signed:", "customer:",
          "contact:", "contact person:", "attn:", "attn.:", "attention:", "name:", "full name:", "customer name:", "contact name:",
          "client name:", "first name:", "last name:", "employee name:", "patient name:", "sender name:")
    + r"[ \t]*" + _NAME
)
# "Regards,\nJane Doe", or "Thanks, Maria Garcia" closing a line
_PERSON_SIGN_OFF = re.compile(
    _cues(*_SIGN_OFFS) + r"(?P<sep>,?[ \t]*\r?\n[ \t]*|,[ \t]+)" + _NAME + r"(?P<eol>[ \t]*[.!]?[ \t]*(?:\r?\n|$))?"
)
_PERSON_GREETING = re.compile(_cues("hi", "hello", "hey") + r"[ \t]+" + _NAME + r"(?=[ \t]*[,!\n])")
_PERSON_WEAK = re.compile(
    _cues("this is", "I'm", "I’m", "I am") + r"[ \t]+" + _NAME + r"(?P<after>[ \t]+(?:from|at|with|here|speaking|calling)\b)?"
)
_PERSON_HEADER = re.compile(r"(?m)^[ \t]*(?:From|To|Cc|Reply-To|Sender):[ \t]*" + _NAME + r"(?=[ \t]*(?:<|,|\r?\n|$))")
_PERSON_JSON = re.compile(
    r"[\"'](?i:(?:customer|contact|client|full|first|last|sender|recipient|requester|assignee|employee|caller|patient|person|signatory)"
    r"[_ ]?name|customer|contact|sender|recipient|requester|assignee|employee|caller|patient|person|signatory)[\"']\s*:\s*[\"']"
    + _NAME + r"[\"']"
)
# Words that make a "name" a role, a department, a group, a company or a sentence instead
# ("Dear Accounts Payable", "Hi Team", "Regards,\nAcme Support", "This is Urgent").
_NOT_NAMES = frozenset("""
Sir Sirs Madam Madame Team Teams All Everyone Everybody Friend Friends Colleague Colleagues Folks There Guys Valued
Customer Customers Client Clients Member Members Partner Partners User Users Reader Readers Applicant Applicants Candidate
Candidates Student Students Parent Parents Guardian Neighbor Neighbour Neighbors Neighbours Shareholder Shareholders Stakeholder
Stakeholders Supplier Suppliers Vendor Vendors Tenant Tenants Landlord Owner Owners Patient Patients Resident Residents Guest
Guests Subscriber Subscribers Community Organizer Organiser Organizers Organisers Editor Editors Author Authors Reviewer Reviewers
Committee Board Panel Council Sales Support Service Services Help Helpdesk Desk Care Success Accounts Account Payable Receivable
Billing Finance Financial Payroll Treasury Accounting Procurement Purchasing Hiring Manager Managers Management Recruiter
Recruiters Recruiting Recruitment Talent Acquisition Human Resources Legal Compliance Operations Ops Logistics Shipping Returns
Claims Marketing Engineering Product Products Security Privacy Admissions Registrar Office Department Dept Division Director
Directors Officer Officers Representative Representatives Agent Agents Staff Employee Employees Administrator Administrators
Admin Coordinator Secretary Receptionist Executive Executives President Chair Chairperson Dean Faculty Principal Supervisor
Lead Leads Head Chief Doctor Professor Nurse Front Back Inc Ltd Llc Corp Corporation Company Co Group Holdings Bank Solutions
Technologies Systems Labs Associates International Global Foundation University College School Hospital Clinic Agency Ministry
Store Shop The A An Our Your My This That These Those It Its Not Just Also Re Regarding About Urgent Important Sorry Happy
Glad Writing Following Please Thanks Thank Regards Best Kind Warm Hi Hello Hey Dear Good Morning Afternoon Evening Monday
Tuesday Wednesday Thursday Friday Saturday Sunday Today Tomorrow Yes No Ok Okay Here Unknown Anonymous Sent Reply Forwarded
For To And Or But Of In On At By From As Is Are Was Were Be Been Am Do Does Did Have Has Had We You He She They Me Us Him Her Them
""".split())
_WORD_SPACE_BEFORE = re.compile(r"\w $")
# A lower-case word right after a name that makes it a group: "Dear Contoso team", "Hi Acme support"
_GROUP_AFTER = re.compile(
    r"[ \t]+(?:team|teams|support|department|dept|office|group|staff|crew|billing|accounts|sales|finance|desk|inc|ltd|llc|corp|"
    r"company|customers?|members|partners|folks|people|family)\b"
)


def _person_ok(m: re.Match[str], *, full_name: bool = False) -> bool:
    """``full_name``: a single word is a name only with a title or a "from/at/..." after it."""
    text, start = m.string, m.start()
    if start and (text[start - 1].isalnum() or text[start - 1] in "_-"):
        return False  # the cue is the end of a longer word ("Whi", "sothis is")
    if text.startswith(("name:", "Name:"), start) and _WORD_SPACE_BEFORE.search(text, max(0, start - 2), start):
        return False  # "Product name:", "File name:": not a person's name
    if "sep" in m.re.groupindex and "\n" not in m.group("sep") and m.group("eol") is None:
        return False  # "Thanks, Maria" is a sign-off only when the name closes the line
    words = m.group("v").split()
    titled = len(words) > 1 and words[0].rstrip(".") in _TITLES
    names = words[1:] if titled else words
    if not names or names[0].rstrip(".") in _TITLES or any(w.rstrip(".") in _NOT_NAMES or not w[0].isupper() for w in names):
        return False  # a title alone ("Dear Mr. and Mrs. Smith"), or a role, group, company or sentence
    if _GROUP_AFTER.match(m.string, m.end("v")):
        return False
    if full_name and not titled and len(names) < 2:
        return "after" in m.re.groupindex and m.group("after") is not None
    return True


def _person_full(m: re.Match[str]) -> bool:
    return _person_ok(m, full_name=True)


_DEL_DIGITS = str.maketrans("", "", "0123456789")


def _n_digits(s: str) -> int:
    if s.isascii():  # bytes.translate is much faster than str.translate
        b = s.encode("ascii")
        return len(b) - len(b.translate(None, b"0123456789"))
    return len(s) - len(s.translate(_DEL_DIGITS))


# Cue words (in the lower-cased text, with a space in front) decide which cue-based detectors run at
# all: S secret token, A secret assignment, N SSN, P strong person cue, O sign-off, H mail header, W weak
# person cue or greeting. Plain substring tests: much faster than one regex alternation of them all.
_CUE_WORDS = (
    ("S", ("sk-", "ghp_", "gho_", "ghu_", "ghs_", "ghr_", "github_pat_", "akia", "asia", "xox", "aiza", "hf_", "k_live_", "k_test_",
           "glpat-", "eyj", "private key")),
    ("A", ("key", "secret", "token", "pass", "pwd")),
    ("N", ("ssn", "social")),
    ("P", ("name", "customer:", "contact", "attn", "attention:", "signed", "dear")),
    ("O", ("regards", "best", "thank", "cheers", "sincerely", "yours", "respectfully")),
    ("H", ("from:", "to:", "cc:", "sender:")),
    ("W", ("this is", "i'm", "i’m", "i am", " hi", "\nhi", "hello", " hey", "\nhey")),
)


def _cue_kinds(text: str) -> set[str]:
    low = " " + text.lower()
    kinds = set()
    for kind, words in _CUE_WORDS:  # (a plain loop: any() over a generator costs twice as much here)
        for w in words:
            if w in low:
                kinds.add(kind)
                break
    return kinds


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


def _secret_assign_ok(value: str) -> bool:
    # an assigned secret has letters and digits, or is long; "password: please reset" is not one
    has_alpha = any(c.isalpha() for c in value)
    has_digit = any(c.isdigit() for c in value)
    return (has_alpha and has_digit) or len(value) >= 20


def _valid(check: Callable[[str], bool]) -> Callable[[re.Match[str], str], bool]:
    return lambda m, value: check(value)


class PiiScanner:
    """Find (and optionally replace) PII in texts and records; what it finds accumulates in :attr:`tally`.

    ``report_only``: types that are found and counted but never replaced.
    """

    def __init__(self, types: Iterable[str] = ALL_TYPES, *, report_only: Iterable[str] = DEFAULT_REPORT_ONLY, phone_region: str = "US"):
        types, report_only = list(types), list(report_only)
        unknown = (set(types) | set(report_only)) - set(ALL_TYPES)
        if unknown:
            from tunesmith.errors import ConfigError

            raise ConfigError(f"data.pii has unknown types {sorted(unknown)}", hint=f"choose from {', '.join(ALL_TYPES)}")
        self.types = [t for t in ALL_TYPES if t in set(types)]
        self.redacted_types = frozenset(self.types) - set(report_only)
        self.tally = PiiTally(dict.fromkeys(self.types, 0))
        self.phone_region = phone_region
        self._phone_ok = _phone_validator(phone_region)
        self._steps = self._make_steps()

    @classmethod
    def from_config(cls, cfg: Any) -> PiiScanner | None:
        """The scanner a :class:`~tunesmith.data.config.PiiConfig` asks for; None when ``mode: off``."""
        if cfg.mode == "off":
            return None
        return cls(cfg.types, report_only=cfg.report_only, phone_region=cfg.phone_region)

    @property
    def counts(self) -> dict[str, int]:
        return self.tally.counts

    @property
    def rows_with_pii(self) -> int:
        return self.tally.rows_with_pii

    # Each step: (type, pattern, group, check(match, value), gate). A gate is a cheap test (digit count,
    # character, or the set of cue kinds found by one scan of the lower-cased text) that must pass
    # before the regex runs: most texts skip most regexes.
    def _make_steps(self) -> list[tuple[str, re.Pattern[str], Any, Callable[..., bool] | None, Callable[..., bool]]]:
        steps: list[Any] = []
        t = set(self.types)
        if "SECRET" in t:
            steps.append(("SECRET", _SECRET, 0, None, lambda w, cues, nd: "S" in cues))
            steps.append(("SECRET", _SECRET_ASSIGN, "v", _valid(_secret_assign_ok), lambda w, cues, nd: "A" in cues))
        if "EMAIL" in t:
            steps.append(("EMAIL", _EMAIL, 0, None, lambda w, cues, nd: "@" in w))
        if "IBAN" in t:
            steps.append(("IBAN", _IBAN, 0, _valid(iban_ok), lambda w, cues, nd: nd >= 10))
        if "CREDIT_CARD" in t:
            steps.append(("CREDIT_CARD", _CARD, 0, _valid(lambda v: luhn_ok(re.sub(r"\D", "", v))), lambda w, cues, nd: nd >= 13))
        if "SSN" in t:
            steps.append(("SSN", _SSN, 0, None, lambda w, cues, nd: nd >= 9 and "-" in w))
            steps.append(("SSN", _SSN_CUE, "v", None, lambda w, cues, nd: nd >= 9 and "N" in cues))
        if "IP_ADDRESS" in t:
            steps.append(("IP_ADDRESS", _IPV4, 0, _valid(_ip_ok), lambda w, cues, nd: nd >= 4 and w.count(".") >= 3))
            steps.append(("IP_ADDRESS", _IPV6, 0, _valid(lambda v: v.count(":") >= 2 and _ip_ok(v)),
                          lambda w, cues, nd: "::" in w or w.count(":") >= 5))
        if "PHONE" in t:
            steps.append(("PHONE", _PHONE, 0, _valid(self._phone_ok), lambda w, cues, nd: nd >= 7))
        if "PERSON" in t:
            steps.append(("PERSON", _PERSON_JSON, "v", lambda m, v: _person_ok(m), lambda w, cues, nd: '":' in w or "':" in w))
            steps.append(("PERSON", _PERSON_HEADER, "v", lambda m, v: _person_full(m), lambda w, cues, nd: "H" in cues))
            steps.append(("PERSON", _PERSON_STRONG, "v", lambda m, v: _person_ok(m), lambda w, cues, nd: "P" in cues))
            steps.append(("PERSON", _PERSON_SIGN_OFF, "v", lambda m, v: _person_ok(m), lambda w, cues, nd: "O" in cues))
            steps.append(("PERSON", _PERSON_GREETING, "v", lambda m, v: _person_ok(m), lambda w, cues, nd: "W" in cues))
            steps.append(("PERSON", _PERSON_WEAK, "v", lambda m, v: _person_full(m), lambda w, cues, nd: "W" in cues))
        return steps

    def find(self, text: str) -> list[Finding]:
        """What the detectors find in one text, as spans of it, in order (nothing is counted)."""
        findings: list[Finding] = []
        if len(text) < 6:
            return findings
        work = text
        nd = _n_digits(text)
        cues = _cue_kinds(text)
        if nd < 4 and not cues and "@" not in text and ":" not in text:
            return findings  # nothing any detector could match: the common case
        # Found spans are masked in ``work`` with same-length NULs, so spans stay aligned with the
        # original text and later detectors do not see earlier findings.
        for kind, pattern, group, check, gate in self._steps:
            if not gate(work, cues, nd):
                continue
            new_spans = []
            for m in pattern.finditer(work):
                s, e = m.span(group)
                value = work[s:e]
                if "\x00" in value:
                    continue
                if check is not None and not check(m, value):
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
        findings.sort(key=lambda f: f.start)
        return findings

    def find_in_texts(self, texts: list[str]) -> list[list[Finding]]:
        """Findings per text of one record, with every other occurrence of a found entity added."""
        found = [self.find(t) for t in texts]
        if any(found):
            found = _resolve_entities(texts, found)
        return found

    def placeholders(self, found: list[list[Finding]]) -> dict[tuple[str, str], str]:
        """(type, entity key) -> ``<TYPE_n>``, numbered per type in order of first appearance."""
        names: dict[tuple[str, str], str] = {}
        per_type: dict[str, int] = {}
        for fs in found:
            for f in fs:
                k = (f.type, self.entity_key(f.type, f.ref))
                if k not in names:
                    per_type[f.type] = per_type.get(f.type, 0) + 1
                    names[k] = f"<{f.type}_{per_type[f.type]}>"
        return names

    def entity_key(self, kind: str, value: str) -> str:
        """Two values with the same key are the same entity (same placeholder)."""
        if kind == "PERSON":
            return _person_key(value)
        if kind == "EMAIL":
            return value.lower()
        if kind == "IP_ADDRESS":
            try:
                return str(ipaddress.ip_address(value))
            except ValueError:
                return value
        if kind == "PHONE":
            return _phone_key(value, self.phone_region)
        if kind in ("CREDIT_CARD", "SSN", "IBAN"):
            return re.sub(r"[^0-9A-Za-z]", "", value).upper()
        return value

    def _replace(self, text: str, findings: list[Finding], names: dict[tuple[str, str], str]) -> str:
        out, last = [], 0
        for f in findings:
            if f.type not in self.redacted_types:
                continue
            out.append(text[last : f.start])
            out.append(names[(f.type, self.entity_key(f.type, f.ref))])
            last = f.end
        out.append(text[last:])
        return "".join(out)

    def scan(self, text: str, *, redact: bool) -> tuple[str, list[Finding]]:
        """One text as a record of its own: (text with placeholders if ``redact``, findings in the original text)."""
        found = self.find_in_texts([text])[0]
        if not found:
            return text, found
        self._count(found)
        self.tally.rows_with_pii += 1
        if not redact:
            return text, found
        return self._replace(text, found, self.placeholders([found])), found

    def apply(self, record: dict, *, redact: bool) -> int:
        """Scan every text of a record in place (message contents, tool results among them, and the string
        values of tool-call arguments), the same entity getting the same placeholder everywhere in the
        record; count rows whose answer (an assistant turn or its calls) holds an entity. Returns the
        number of findings."""
        if "text" in record and "messages" not in record:
            holders: list[dict] = [record]
            key = "text"
        else:
            holders = record["messages"]
            key = "content"
        texts = [h.get(key) or "" for h in holders]
        answer = [h.get("role") == "assistant" for h in holders]
        arguments: list[str] = []  # string values inside tool-call arguments, in a fixed walk order
        map_call_argument_strings(record, lambda v: arguments.append(v) or v)
        texts += arguments
        answer += [True] * len(arguments)  # calls are the assistant's output
        found = [self.find(t) for t in texts]
        if not any(found):
            return 0  # the common case
        found = _resolve_entities(texts, found)
        n = sum(len(fs) for fs in found)
        for fs in found:
            self._count(fs)
        t = self.tally
        t.rows_with_pii += 1
        in_answer = [f for is_answer, fs in zip(answer, found, strict=True) if is_answer for f in fs]
        if in_answer:
            t.rows_with_pii_in_answer += 1
            if redact and any(f.type in self.redacted_types for f in in_answer):
                t.rows_answer_redacted += 1
        if redact:
            names = self.placeholders(found)
            replaced = [self._replace(text, fs, names) if fs else text for text, fs in zip(texts, found, strict=True)]
            for h, text, fs in zip(holders, replaced, found, strict=False):
                if fs:
                    h[key] = text
            if arguments:
                new_arguments = iter(replaced[len(holders):])
                map_call_argument_strings(record, lambda _: next(new_arguments))
        return n

    def _count(self, findings: list[Finding]) -> None:
        counts = self.tally.counts
        for f in findings:
            counts[f.type] += 1


def _phone_key(value: str, region: str) -> str:
    try:
        import phonenumbers

        return phonenumbers.format_number(phonenumbers.parse(value, region), phonenumbers.PhoneNumberFormat.E164)
    except Exception:  # noqa: BLE001 - a value the validator accepted parses; this is a fallback only
        return re.sub(r"\D", "", value)


def _name_words(value: str) -> list[str]:
    """The words of a name without its title and initials."""
    return [w for w in value.split() if w.rstrip(".") not in _TITLES and not (len(w) == 2 and w.endswith("."))]


def _person_key(value: str) -> str:
    return " ".join(_name_words(value)).casefold()


def _is_word_char(c: str) -> bool:
    return c.isalnum() or c == "_"


def _occurrences(text: str, form: str) -> Iterable[int]:
    """Start of each occurrence of ``form`` in ``text`` that is not part of a longer word."""
    i = text.find(form)
    while i >= 0:
        end = i + len(form)
        if not (i and _is_word_char(form[0]) and _is_word_char(text[i - 1])) and not (
            end < len(text) and _is_word_char(form[-1]) and _is_word_char(text[end])
        ):
            yield i
        i = text.find(form, i + 1)


def _resolve_entities(texts: list[str], found: list[list[Finding]]) -> list[list[Finding]]:
    """Link each finding to its entity and add every other occurrence of it in the record's texts.

    A person found by one word ("Dear Maria", "Dr. Garcia") is the full name found elsewhere in the
    record whose first or last word it is ("Maria Garcia"), unless two full names share that word. The
    surface forms searched are each value found, and the first and last word of each full name.
    """
    full_names: dict[str, set[str]] = {}  # first/last word -> keys of the full names it belongs to
    first_full: dict[str, str] = {}  # key -> the first value found for that full name
    for fs in found:
        for f in fs:
            words = _name_words(f.value) if f.type == "PERSON" else []
            if len(words) >= 2:
                key = _person_key(f.value)
                first_full.setdefault(key, f.value)
                for w in (words[0], words[-1]):
                    full_names.setdefault(w, set()).add(key)
    alias = {w: first_full[next(iter(keys))] for w, keys in full_names.items() if len(keys) == 1}
    forms: dict[str, tuple[str, str]] = {}  # surface form -> (type, entity)
    linked = []
    for fs in found:
        out = []
        for f in fs:
            words = _name_words(f.value) if f.type == "PERSON" else []
            entity = alias.get(words[0], f.value) if len(words) == 1 else f.value
            out.append(Finding(f.type, f.start, f.end, f.value, entity))
            forms.setdefault(f.value, (f.type, entity))
        linked.append(out)
    for w, full in alias.items():
        forms.setdefault(w, ("PERSON", full))
    ordered = sorted(forms, key=len, reverse=True)  # "Maria Garcia" before "Maria"
    result = []
    for text, fs in zip(texts, linked, strict=True):
        taken = [(f.start, f.end) for f in fs]
        extra = []
        for form in ordered:
            for start in _occurrences(text, form):
                end = start + len(form)
                if not any(s < end and start < e for s, e in taken):
                    kind, entity = forms[form]
                    extra.append(Finding(kind, start, end, form, entity))
                    taken.append((start, end))
        result.append(sorted(fs + extra, key=lambda f: f.start) if extra else fs)
    return result
