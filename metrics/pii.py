"""PII: how many pieces of personal data a text holds, and of which kinds (pattern recognizers, no NER).

Each kind is a candidate pattern plus a validator, in the manner of Presidio's pattern recognizers:
- email: a mailbox@domain.tld pattern;
- card: 13-19 digits (spaces or dashes allowed) passing the Luhn checksum (python-stdnum);
- iban: country code, check digits and account passing ISO 13616's mod-97 check (python-stdnum);
- phone: a digit run with phone separators that Google's libphonenumber (`phonenumbers`) calls a valid
  number, written internationally (+..) or in North American form;
- ip: an IPv4 or IPv6 address the standard library parses;
- national_id: a US SSN (python-stdnum's rules), Spanish DNI/NIE, Italian codice fiscale, French NIR,
  Indian Aadhaar (Verhoeff checksum), each validated by python-stdnum.

Names of people need a named-entity model: none ships offline with a pip package here, so this scorer
does not look for them and its id says so (`:no-ner`). A text with no digit and no "@" holds none of the
kinds above, which keeps chat traffic fast; likewise a pattern runs only where its cheap precondition holds
(an "@" for e-mail, a ":" for IPv6, a run of seven digits for cards, phones and the digit-only national ids),
so the usual long reply with a version number or a date is not scanned eleven times. The value is the number
of findings; `kinds` names them.
"""

from __future__ import annotations

import bisect
import ipaddress
import re
from collections.abc import Callable, Sequence

from metrics.base import Scores, has_text, score_each
from metrics.identity import package_version

KINDS = ("email", "card", "iban", "phone", "ip", "national_id")
NER = "no-ner"  # person names are not detected: no offline NER model is installed
MAX_REMEMBERED = 50_000  # texts whose findings are kept between `score` and `kinds`

_CANDIDATE = re.compile(r"[0-9@]")  # every kind below has an "@" or a digit
# Seven digits, at most two separators apart: every card, phone ("+1 (555) 123-4567"), SSN, DNI/NIE, NIR and
# Aadhaar match holds such a run, so a text without one need not be scanned for them.
_DIGIT_RUN = re.compile(r"\d(?:[ .()+-]{0,2}\d){6}")
_EMAIL = re.compile(r"(?<![\w.+-])[A-Za-z0-9][A-Za-z0-9._%+-]*@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,24}\b")
_CARD = re.compile(r"(?<![\d-])\d(?:[ -]?\d){12,18}(?![\d-])")
_IBAN = re.compile(r"\b[A-Z]{2}\d{2}(?: ?[A-Z0-9]){11,30}\b")
_PHONE = re.compile(r"(?<![\w+])(?:\+\d{1,3}[ .-]?)?(?:\(\d{2,4}\)[ .-]?)?\d{1,4}(?:[ .-]\d{2,4}){1,4}(?![\w-])")
_IPV4 = re.compile(r"(?<![\d.])(?:\d{1,3}\.){3}\d{1,3}(?![\d.])")
_IPV6 = re.compile(r"(?<![\w:])(?:[0-9A-Fa-f]{1,4}:){2,7}:?[0-9A-Fa-f]{0,4}(?:::?[0-9A-Fa-f]{1,4})*(?![\w:])")
_SSN = re.compile(r"(?<![\d-])\d{3}-\d{2}-\d{4}(?![\d-])")
_DNI = re.compile(r"\b[XYZ]?\d{7,8}-?[A-Z]\b")
_CODICE_FISCALE = re.compile(r"\b[A-Z]{6}\d{2}[A-EHLMPR-T]\d{2}[A-Z]\d{3}[A-Z]\b")
_NIR = re.compile(r"(?<!\d)[12] ?\d{2} ?\d{2} ?(?:\d{2}|2[AB]) ?\d{3} ?\d{3} ?\d{2}(?!\d)")
_AADHAAR = re.compile(r"(?<!\d)[2-9]\d{3} \d{4} \d{4}(?!\d)")


class PiiScorer:
    """Findings of personal data per text (0 when none); `kinds` lists their kinds."""

    metric = "pii"

    def __init__(self) -> None:
        self.id = (
            f"pii-patterns:python-stdnum-{package_version('python-stdnum')}"
            f"+phonenumbers-{package_version('phonenumbers')}:{NER}"
        )
        self._validators: dict[str, Callable[[str], bool]] | None = None
        self._found: dict[str, list[tuple[str, str]]] = {}  # score and kinds of one batch find once

    def score(self, texts: Sequence[str | None]) -> Scores:
        if has_text(texts):
            self._load()
        return score_each(texts, lambda text: float(len(self.find(text))))

    def kinds(self, texts: Sequence[str | None]) -> list[str | None]:
        """The distinct kinds found in each text, comma-joined in KINDS order ('' when none, None if blank)."""
        if has_text(texts):
            self._load()
        found: list[str | None] = []
        for text in texts:
            if not isinstance(text, str) or not text.strip():
                found.append(None)
                continue
            present = {kind for kind, _ in self.find(text)}
            found.append(",".join(kind for kind in KINDS if kind in present))
        return found

    def find(self, text: str) -> list[tuple[str, str]]:
        """(kind, matched text) for every finding; overlapping candidates count once, checksummed kinds first."""
        if not _CANDIDATE.search(text):
            return []
        found = self._found.get(text)
        if found is None:
            if len(self._found) >= MAX_REMEMBERED:
                self._found.clear()
            found = self._found[text] = self._find(text)
        return found

    def _find(self, text: str) -> list[tuple[str, str]]:
        self._load()
        findings: list[tuple[str, str]] = []
        starts: list[int] = []  # the spans already found, disjoint and sorted by start (a pasted log has hundreds)
        ends: list[int] = []
        holds = {"@": "@" in text, ":": ":" in text, "digits": _DIGIT_RUN.search(text) is not None, "": True}
        for kind, pattern, needs in self._patterns():
            if not holds[needs]:
                continue
            for match in pattern.finditer(text):
                start, end = match.span()
                at = bisect.bisect_left(starts, end)  # spans before `at` start before this one ends
                if at and ends[at - 1] > start:
                    continue  # overlaps the last of them, the only one that can reach this far (disjoint)
                if self._valid(kind, match.group()):
                    findings.append((kind, match.group()))
                    starts.insert(at, start)
                    ends.insert(at, end)
        return findings

    @staticmethod
    def _patterns() -> list[tuple[str, re.Pattern[str], str]]:
        """(kind, pattern, what the text must hold for the pattern to match at all), in priority order."""
        return [
            ("email", _EMAIL, "@"),
            ("iban", _IBAN, ""),
            ("card", _CARD, "digits"),
            ("national_id", _SSN, "digits"),
            ("national_id", _CODICE_FISCALE, ""),
            ("national_id", _DNI, "digits"),
            ("national_id", _NIR, "digits"),
            ("national_id", _AADHAAR, "digits"),
            ("ip", _IPV4, ""),
            ("ip", _IPV6, ":"),
            ("phone", _PHONE, "digits"),
        ]

    def _valid(self, kind: str, candidate: str) -> bool:
        if kind in ("email",):
            return True
        if kind == "ip":
            try:
                ipaddress.ip_address(candidate)
            except ValueError:
                return False
            return True
        assert self._validators is not None
        return any(check(candidate) for check in self._checks(kind))

    def _checks(self, kind: str) -> list[Callable[[str], bool]]:
        assert self._validators is not None
        if kind == "national_id":
            return [self._validators[name] for name in ("ssn", "dni", "nie", "codice_fiscale", "nir", "aadhaar")]
        return [self._validators[kind]]

    def _load(self) -> None:
        if self._validators is not None:
            return
        import phonenumbers
        from stdnum import iban, luhn
        from stdnum.es import dni, nie
        from stdnum.fr import nir
        from stdnum.in_ import aadhaar
        from stdnum.it import codicefiscale
        from stdnum.us import ssn

        def card(candidate: str) -> bool:
            digits = re.sub(r"[ -]", "", candidate)
            return 13 <= len(digits) <= 19 and digits[0] in "3456" and luhn.is_valid(digits)

        def phone(candidate: str) -> bool:
            digits = sum(c.isdigit() for c in candidate)
            if digits < 7 or digits > 15:
                return False
            try:
                number = phonenumbers.parse(candidate, None if candidate.startswith("+") else "US")
            except phonenumbers.NumberParseException:
                return False
            return phonenumbers.is_valid_number(number)

        self._validators = {
            "card": card,
            "iban": iban.is_valid,
            "phone": phone,
            "ssn": lambda c: "-" in c and ssn.is_valid(c),
            "dni": dni.is_valid,
            "nie": nie.is_valid,
            "codice_fiscale": codicefiscale.is_valid,
            "nir": nir.is_valid,
            "aadhaar": aadhaar.is_valid,
        }
