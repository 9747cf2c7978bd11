"""Quiet hours: may we contact this debtor now, and if not, when next? Pure (no I/O beyond tz data).

Regulation F presumes 08:00-21:00 *at the consumer's location* convenient and, where location facts
conflict, the time must be convenient in every possible location (outreach-channels.md §4). So we gather
every candidate zone (billing address and the phone's area code) and require the window in all of them;
with none known, the organisation's default zone is used.
"""

import functools
from collections.abc import Collection, Iterable
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import phonenumbers
from phonenumbers import timezone as pn_timezone

# A phone that maps to more zones than this is toll-free / non-geographic: it tells us nothing.
MAX_PHONE_ZONES = 3

# US states and Canadian provinces -> every zone used in them. Multi-zone states list all of their zones,
# because "every candidate zone" must hold (a Texas debtor may be in El Paso).
_REGION_ZONES: dict[str, tuple[str, ...]] = {
    # United States
    "AL": ("America/Chicago",), "AK": ("America/Anchorage", "America/Adak"), "AZ": ("America/Phoenix",),
    "AR": ("America/Chicago",), "CA": ("America/Los_Angeles",), "CO": ("America/Denver",),
    "CT": ("America/New_York",), "DE": ("America/New_York",), "DC": ("America/New_York",),
    "FL": ("America/New_York", "America/Chicago"), "GA": ("America/New_York",), "HI": ("Pacific/Honolulu",),
    "ID": ("America/Boise", "America/Los_Angeles"), "IL": ("America/Chicago",),
    "IN": ("America/Indiana/Indianapolis", "America/Chicago"), "IA": ("America/Chicago",),
    "KS": ("America/Chicago", "America/Denver"), "KY": ("America/New_York", "America/Chicago"),
    "LA": ("America/Chicago",), "ME": ("America/New_York",), "MD": ("America/New_York",),
    "MA": ("America/New_York",), "MI": ("America/Detroit", "America/Menominee"), "MN": ("America/Chicago",),
    "MS": ("America/Chicago",), "MO": ("America/Chicago",), "MT": ("America/Denver",),
    "NE": ("America/Chicago", "America/Denver"), "NV": ("America/Los_Angeles", "America/Denver"),
    "NH": ("America/New_York",), "NJ": ("America/New_York",), "NM": ("America/Denver",),
    "NY": ("America/New_York",), "NC": ("America/New_York",), "ND": ("America/Chicago", "America/Denver"),
    "OH": ("America/New_York",), "OK": ("America/Chicago",), "OR": ("America/Los_Angeles", "America/Boise"),
    "PA": ("America/New_York",), "RI": ("America/New_York",), "SC": ("America/New_York",),
    "SD": ("America/Chicago", "America/Denver"), "TN": ("America/Chicago", "America/New_York"),
    "TX": ("America/Chicago", "America/Denver"), "UT": ("America/Denver",), "VT": ("America/New_York",),
    "VA": ("America/New_York",), "WA": ("America/Los_Angeles",), "WV": ("America/New_York",),
    "WI": ("America/Chicago",), "WY": ("America/Denver",), "PR": ("America/Puerto_Rico",),
    # Canada (prefixed to avoid CA = California)
    "CA:AB": ("America/Edmonton",), "CA:BC": ("America/Vancouver", "America/Edmonton"),
    "CA:MB": ("America/Winnipeg",), "CA:NB": ("America/Moncton",), "CA:NL": ("America/St_Johns",),
    "CA:NS": ("America/Halifax",), "CA:NT": ("America/Yellowknife",), "CA:NU": ("America/Iqaluit",),
    "CA:ON": ("America/Toronto", "America/Winnipeg"), "CA:PE": ("America/Halifax",),
    "CA:QC": ("America/Toronto",), "CA:SK": ("America/Regina",), "CA:YT": ("America/Whitehorse",),
}
_US_NAMES = {
    "ALABAMA": "AL", "ALASKA": "AK", "ARIZONA": "AZ", "ARKANSAS": "AR", "CALIFORNIA": "CA", "COLORADO": "CO",
    "CONNECTICUT": "CT", "DELAWARE": "DE", "DISTRICT OF COLUMBIA": "DC", "FLORIDA": "FL", "GEORGIA": "GA",
    "HAWAII": "HI", "IDAHO": "ID", "ILLINOIS": "IL", "INDIANA": "IN", "IOWA": "IA", "KANSAS": "KS",
    "KENTUCKY": "KY", "LOUISIANA": "LA", "MAINE": "ME", "MARYLAND": "MD", "MASSACHUSETTS": "MA",
    "MICHIGAN": "MI", "MINNESOTA": "MN", "MISSISSIPPI": "MS", "MISSOURI": "MO", "MONTANA": "MT",
    "NEBRASKA": "NE", "NEVADA": "NV", "NEW HAMPSHIRE": "NH", "NEW JERSEY": "NJ", "NEW MEXICO": "NM",
    "NEW YORK": "NY", "NORTH CAROLINA": "NC", "NORTH DAKOTA": "ND", "OHIO": "OH", "OKLAHOMA": "OK",
    "OREGON": "OR", "PENNSYLVANIA": "PA", "RHODE ISLAND": "RI", "SOUTH CAROLINA": "SC", "SOUTH DAKOTA": "SD",
    "TENNESSEE": "TN", "TEXAS": "TX", "UTAH": "UT", "VERMONT": "VT", "VIRGINIA": "VA", "WASHINGTON": "WA",
    "WEST VIRGINIA": "WV", "WISCONSIN": "WI", "WYOMING": "WY", "PUERTO RICO": "PR",
}
_CA_NAMES = {
    "ALBERTA": "AB", "BRITISH COLUMBIA": "BC", "MANITOBA": "MB", "NEW BRUNSWICK": "NB",
    "NEWFOUNDLAND AND LABRADOR": "NL", "NOVA SCOTIA": "NS", "NORTHWEST TERRITORIES": "NT", "NUNAVUT": "NU",
    "ONTARIO": "ON", "PRINCE EDWARD ISLAND": "PE", "QUEBEC": "QC", "SASKATCHEWAN": "SK", "YUKON": "YT",
}
_COUNTRY_ALIASES = {
    "USA": "US", "UNITED STATES": "US", "UNITED STATES OF AMERICA": "US", "U.S.": "US", "U.S.A.": "US",
    "CANADA": "CA", "UNITED KINGDOM": "GB", "UK": "GB", "GREAT BRITAIN": "GB", "ENGLAND": "GB",
    "SCOTLAND": "GB", "WALES": "GB", "IRELAND": "IE", "GERMANY": "DE", "FRANCE": "FR", "AUSTRALIA": "AU",
    "MEXICO": "MX", "NETHERLANDS": "NL", "SPAIN": "ES", "ITALY": "IT",
}


@dataclass(frozen=True)
class Window:
    """Allowed local hours [start, end) for a channel."""

    start: time = time(8, 0)
    end: time = time(21, 0)

    def contains(self, local: datetime) -> bool:
        return self.start <= local.time().replace(tzinfo=None) < self.end


def country_code(country: str | None) -> str | None:
    if not country or not country.strip():
        return None
    text = country.strip().upper()
    if len(text) == 2:
        return text
    return _COUNTRY_ALIASES.get(text)


@functools.cache
def _country_zones() -> dict[str, tuple[str, ...]]:
    """ISO country -> zones, from the IANA zone.tab shipped with tzdata (no network, no extra package)."""
    candidates = [Path("/usr/share/zoneinfo/zone.tab")]
    try:
        import tzdata  # noqa: PLC0415 - optional; the pip copy of the same file

        candidates.insert(0, Path(tzdata.__file__).parent / "zoneinfo" / "zone.tab")
    except ImportError:  # pragma: no cover
        pass
    for path in candidates:
        if path.is_file():
            zones: dict[str, list[str]] = {}
            for line in path.read_text().splitlines():
                if line.startswith("#") or not line.strip():
                    continue
                parts = line.split("\t")
                if len(parts) >= 3:
                    zones.setdefault(parts[0], []).append(parts[2])
            return {code: tuple(z) for code, z in zones.items()}
    return {}  # pragma: no cover


def address_zones(state: str | None, country: str | None) -> tuple[str, ...]:
    """Zones of a billing address: the state/province when known, else a single-zone country."""
    code = country_code(country)
    region = (state or "").strip().upper()
    if code in (None, "US") and region:
        abbreviation = _US_NAMES.get(region, region)
        if abbreviation in _REGION_ZONES and ":" not in abbreviation:
            return _REGION_ZONES[abbreviation]
    if code == "CA" and region:
        abbreviation = _CA_NAMES.get(region, region)
        if f"CA:{abbreviation}" in _REGION_ZONES:
            return _REGION_ZONES[f"CA:{abbreviation}"]
    if code is not None:
        zones = _country_zones().get(code, ())
        # A country with many zones and no usable state says nothing precise: no information.
        if 0 < len(zones) <= MAX_PHONE_ZONES:
            return zones
    return ()


def phone_zones(e164: str | None) -> tuple[str, ...]:
    """Zones of a number's area code (1-3 zones), else () for toll-free, non-geographic or unknown."""
    if not e164:
        return ()
    try:
        number = phonenumbers.parse(e164, None)
    except phonenumbers.NumberParseException:
        return ()
    zones = tuple(z for z in pn_timezone.time_zones_for_number(number) if z != "Etc/Unknown")
    return zones if 0 < len(zones) <= MAX_PHONE_ZONES else ()


def candidate_zones(
    *, state: str | None = None, country: str | None = None, phones: Iterable[str | None] = (), default: str
) -> tuple[str, ...]:
    """Every zone the debtor may be in (address and phones); the org default when none is known."""
    zones: list[str] = list(address_zones(state, country))
    for phone in phones:
        zones.extend(phone_zones(phone))
    unique = tuple(dict.fromkeys(zones))
    return unique or (default,)


def allowed_at(moment: datetime, zones: Iterable[str], window: Window) -> bool:
    """True when `moment` (aware) is inside the window in every zone."""
    if moment.tzinfo is None:
        raise ValueError("allowed_at needs an aware datetime")
    return all(window.contains(moment.astimezone(ZoneInfo(zone))) for zone in zones)


def next_allowed(moment: datetime, zones: Iterable[str], window: Window, *, step: timedelta = timedelta(minutes=15),
                 horizon: timedelta = timedelta(days=8)) -> datetime | None:
    """The first moment >= `moment` allowed in every zone, on a `step` grid; None when none within `horizon`
    (zones whose windows never overlap, e.g. Honolulu and London).

    A scan, not arithmetic: DST changes and zones with half-hour offsets make the closed form error-prone,
    and 8 days at 15 minutes is under 800 checks.
    """
    zones = tuple(zones)
    if allowed_at(moment, zones, window):
        return moment
    # Align to the grid so the answer is a time the 15-minute send job actually runs at.
    seconds = int(step.total_seconds())
    base = moment.replace(microsecond=0)
    offset = (-int(base.timestamp())) % seconds
    candidate = base + timedelta(seconds=offset)
    end = moment + horizon
    while candidate <= end:
        if allowed_at(candidate, zones, window):
            return candidate
        candidate += step
    return None


def closed_days(moment: datetime, zones: Iterable[str], *, weekends: bool, holidays: Collection[date]) -> list[str]:
    """The candidate zones where `moment` falls on a day without contact (a weekend when `weekends`, or a
    holiday), as "<zone> <date> (<why>)"; empty when it is a business day in every zone."""
    closed = []
    for zone in zones:
        local = moment.astimezone(ZoneInfo(zone)).date()
        if local in holidays:
            closed.append(f"{zone} {local.isoformat()} (holiday)")
        elif weekends and local.weekday() >= 5:
            closed.append(f"{zone} {local.isoformat()} ({local:%A})")
    return closed


def next_business_moment(moment: datetime, zones: Iterable[str], window: Window, *, weekends: bool,
                         holidays: Collection[date], horizon: timedelta = timedelta(days=62)) -> datetime | None:
    """The first moment >= `moment` inside the window *and* on a business day in every zone (the 15-minute
    grid of `next_allowed`); None when there is none within `horizon`.

    From an allowed moment that falls on a closed day somewhere, jump to the latest next local midnight of
    the zones that are closed: none of them opens before its own midnight, so nothing valid is skipped.
    """
    zones = tuple(zones)
    end = moment + horizon
    candidate: datetime | None = moment
    while candidate is not None and candidate <= end:
        candidate = next_allowed(candidate, zones, window)
        if candidate is None or candidate > end:
            return None
        blocked = [zone for zone in zones
                   if closed_days(candidate, (zone,), weekends=weekends, holidays=holidays)]
        if not blocked:
            return candidate
        midnights = []
        for zone in blocked:
            tz = ZoneInfo(zone)
            local = candidate.astimezone(tz).date() + timedelta(days=1)
            midnights.append(datetime.combine(local, time(0), tzinfo=tz).astimezone(candidate.tzinfo))
        candidate = max(midnights)
    return None
