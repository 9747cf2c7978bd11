"""Promise dates in customer replies, resolved against the day the reply was received. No dependencies.

Conventions (shared with the evaluation set, see replies_eval/README.md): a bare weekday is its next
occurrence strictly after today; "next <weekday>" is that day in next calendar week; "next week" is Friday
of next week; "end of (the) month" / EOM is the month's last day; a day of month already past rolls to next
month; numeric dates are US month/day unless the first number is > 12 or they are written with dots.
"""

from __future__ import annotations

import calendar
import re
import unicodedata
from datetime import date, timedelta

__all__ = ["extract_date", "fold"]


def fold(text: str) -> str:
    """Lowercase, accents stripped, typographic apostrophes straightened: what every rule matches on."""
    text = text.replace("\u2019", "'").replace("\u2018", "'").replace("\u00b4", "'")
    decomposed = unicodedata.normalize("NFKD", text)
    return "".join(c for c in decomposed if not unicodedata.combining(c)).lower()


MONTHS = {
    # en
    "january": 1, "jan": 1, "february": 2, "feb": 2, "march": 3, "mar": 3, "april": 4, "apr": 4, "may": 5,
    "june": 6, "jun": 6, "july": 7, "jul": 7, "august": 8, "aug": 8, "september": 9, "sept": 9, "sep": 9,
    "october": 10, "oct": 10, "november": 11, "nov": 11, "december": 12, "dec": 12,
    # es / pt
    "enero": 1, "febrero": 2, "marzo": 3, "abril": 4, "mayo": 5, "junio": 6, "julio": 7, "agosto": 8,
    "septiembre": 9, "setiembre": 9, "octubre": 10, "noviembre": 11, "diciembre": 12,
    "janeiro": 1, "fevereiro": 2, "marco": 3, "maio": 5, "junho": 6, "julho": 7, "setembro": 9,
    "outubro": 10, "novembro": 11, "dezembro": 12,
    # fr
    "janvier": 1, "fevrier": 2, "mars": 3, "avril": 4, "mai": 5, "juin": 6, "juillet": 7, "aout": 8,
    "septembre": 9, "octobre": 10, "novembre": 11, "decembre": 12,
    # de
    "januar": 1, "februar": 2, "marz": 3, "maerz": 3, "juni": 6, "juli": 7, "oktober": 10, "dezember": 12,
}
WEEKDAYS = {
    "monday": 0, "tuesday": 1, "tue": 1, "tues": 1, "wednesday": 2, "wed": 2, "thursday": 3,
    "thu": 3, "thur": 3, "thurs": 3, "friday": 4, "fri": 4, "saturday": 5, "sunday": 6,
    "lunes": 0, "martes": 1, "miercoles": 2, "jueves": 3, "viernes": 4, "sabado": 5, "domingo": 6,
    "lundi": 0, "mardi": 1, "mercredi": 2, "jeudi": 3, "vendredi": 4, "samedi": 5, "dimanche": 6,
    "montag": 0, "dienstag": 1, "mittwoch": 2, "donnerstag": 3, "freitag": 4, "samstag": 5, "sonntag": 6,
    "segunda-feira": 0, "terca-feira": 1, "terca": 1, "quarta-feira": 2, "quarta": 2, "quinta-feira": 3,
    "quinta": 3, "sexta-feira": 4, "sexta": 4,
}
NUMBER_WORDS = {"a": 1, "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7,
                "eight": 8, "nine": 9, "ten": 10, "couple of": 2, "few": 3}

_MONTH_RE = "|".join(sorted(MONTHS, key=len, reverse=True))
_WD_RE = "|".join(sorted((re.escape(w) for w in WEEKDAYS), key=len, reverse=True))
_ORD = r"(?:st|nd|rd|th|er|o|º)?"

_ISO = re.compile(r"\b(20\d\d)-(\d\d?)-(\d\d?)\b")
_DOTTED = re.compile(r"\b(\d\d?)\.(\d\d?)\.(?:(\d{4}|\d\d)\b)?")
_SLASHED = re.compile(r"(?<![\d/.-])(\d\d?)[/-](\d\d?)(?:[/-](\d{4}|\d\d))?(?![\d/-])")
_MONTH_DAY = re.compile(rf"\b({_MONTH_RE})\.?\s+(\d\d?){_ORD}\b(?:,?\s+(20\d\d))?")
_DAY_MONTH = re.compile(rf"\b(\d\d?){_ORD}\.?\s+(?:of\s+|de\s+)?({_MONTH_RE})\b(?:\s+(?:de\s+)?(20\d\d))?")
_DAY_OF_MONTH = re.compile(r"(?:\b(?:the|dia|el|le|am|on|by)\s+)(\d\d?)(st|nd|rd|th|er|o)?\b(?!\s*(?:[:/-]|\.\d|days?|weeks?|%|am\b|pm\b))")
_BARE_ORDINAL = re.compile(r"\b(\d\d?)(st|nd|rd|th)\b")
_IN_N = re.compile(r"\b(?:in|within|give us|give me|next)\s+(?:the\s+)?(?:next\s+)?(\d+|" + "|".join(NUMBER_WORDS) + r")\s+(day|week|business day)s?\b")
_TOMORROW = re.compile(r"\b(tomorrow|tmrw|tmr|tomorow|manana|demain|morgen|amanha)\b")
_TODAY = re.compile(r"\b(today|tonight|hoy|aujourd'hui|heute|hoje)\b")
_END_OF_MONTH = re.compile(r"\b(end of (?:the )?month|eom|fin de mes|fin del mes|fin du mois|ende des monats|monatsende|fim do mes|final do mes)\b")
_END_OF_NAMED = re.compile(rf"\b(?:end of|fin de|fin du mois de|ende|fim de)\s+({_MONTH_RE})\b")
_NEXT_WEEK = re.compile(r"\b(next week|end of next week|la proxima semana|la semana que viene|la semaine prochaine|nachste woche|naechste woche|proxima semana|semana que vem)\b")
_WEEKDAY = re.compile(rf"(?<![\w-])(next\s+|this\s+|coming\s+)?({_WD_RE})\b")


def _safe(year: int, month: int, day: int) -> date | None:
    try:
        return date(year, month, day)
    except ValueError:
        return None


def _year(raw: str | None, today: date) -> int | None:
    if raw is None:
        return None
    value = int(raw)
    return value + 2000 if value < 100 else value


def _month_day(month: int, day: int, year: int | None, today: date) -> date | None:
    found = _safe(year or today.year, month, day)
    if found is not None and year is None and (today - found).days > 60:
        found = _safe(today.year + 1, month, day)
    return found


def _roll_day(day: int, today: date) -> date | None:
    found = _safe(today.year, today.month, day)
    if found is not None and found >= today:
        return found
    year, month = (today.year + 1, 1) if today.month == 12 else (today.year, today.month + 1)
    return _safe(year, month, day)


def _last_day(year: int, month: int) -> date:
    return date(year, month, calendar.monthrange(year, month)[1])


def _absolute(text: str, today: date) -> list[date]:
    found: list[date | None] = []
    for m in _ISO.finditer(text):
        found.append(_safe(int(m[1]), int(m[2]), int(m[3])))
    for m in _DOTTED.finditer(text):
        found.append(_month_day(int(m[2]), int(m[1]), _year(m[3], today), today))
    for m in _SLASHED.finditer(text):
        first, second = int(m[1]), int(m[2])
        month, day = (second, first) if first > 12 else (first, second)
        found.append(_month_day(month, day, _year(m[3], today), today))
    for m in _MONTH_DAY.finditer(text):
        found.append(_month_day(MONTHS[m[1]], int(m[2]), _year(m[3], today), today))
    for m in _DAY_MONTH.finditer(text):
        found.append(_month_day(MONTHS[m[2]], int(m[1]), _year(m[3], today), today))
    return [d for d in found if d is not None]


def _relative(text: str, today: date) -> list[date]:
    found: list[date] = []
    next_friday = today + timedelta(days=(7 - today.weekday()) + 4)
    for m in _END_OF_NAMED.finditer(text):
        month = MONTHS[m[1]]
        found.append(_last_day(today.year + (1 if month < today.month else 0), month))
    if _END_OF_MONTH.search(text):
        found.append(_last_day(today.year, today.month))
    if _NEXT_WEEK.search(text):
        found.append(next_friday)
    for m in _IN_N.finditer(text):
        count = int(m[1]) if m[1].isdigit() else NUMBER_WORDS[m[1]]
        found.append(today + timedelta(days=count * (7 if m[2] == "week" else 1)))
    if _TOMORROW.search(text):
        found.append(today + timedelta(days=1))
    if _TODAY.search(text):
        found.append(today)
    return found


def _weekday(text: str, today: date) -> list[date]:
    found: list[date] = []
    for m in _WEEKDAY.finditer(text):
        target = WEEKDAYS[m[2]]
        if m[1] and m[1].strip() == "next":
            found.append(today - timedelta(days=today.weekday()) + timedelta(days=7 + target))
        else:
            ahead = (target - today.weekday()) % 7 or 7
            found.append(today + timedelta(days=ahead))
    return found


def _days_of_month(text: str, today: date) -> list[date]:
    found: list[date | None] = []
    for m in _DAY_OF_MONTH.finditer(text):
        found.append(_roll_day(int(m[1]), today))
    for m in _BARE_ORDINAL.finditer(text):
        found.append(_roll_day(int(m[1]), today))
    return [d for d in found if d is not None and 1 <= d.day <= 31]


def extract_date(text: str, today: date, *, future_only: bool = True) -> date | None:
    """The promised date in `text`, or None. Explicit dates beat days of month, which beat relative
    phrases, which beat weekdays ("Friday March 20" is March 20). Within a tier the latest date wins
    ("$500 now and the rest on 3/30" is 3/30)."""
    folded = fold(text)
    for tier in (_absolute, _days_of_month, _relative, _weekday):
        dates = [d for d in tier(folded, today) if not future_only or d >= today]
        if dates:
            return max(dates)
    return None
