"""The checks an option value passes before a manifest is written: Kubernetes names, image references,
resource quantities, cron schedules. Each raises :class:`~fourfold.errors.InvalidOptionError` naming the
option, the value and what would be accepted.

>>> dns_label("--name", "fraud-online")
'fraud-online'
>>> quantity("--cpu-request", "500m", cpu=True)
0.5
"""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation

from fourfold.errors import InvalidOptionError
from fourfold.extras import require

__all__ = ["cron", "dns_label", "image_ref", "in_range", "quantity"]

# RFC 1035 label (what a Service name must be: it starts with a letter); also a valid RFC 1123 label
_DNS_1035 = re.compile(r"[a-z]([-a-z0-9]*[a-z0-9])?")
_DNS_1123 = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
# docker/distribution's reference grammar, simplified: [host[:port]/]path[:tag][@digest]
_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_HOST = (
    r"(?:[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?(?:\.[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?)*(?::[0-9]+)?)"
)
_IMAGE = re.compile(
    rf"(?:{_HOST}/)?{_COMPONENT}(?:/{_COMPONENT})*(?::[\w][\w.-]{{0,127}})?(?:@sha256:[0-9a-f]{{64}})?"
)
_QUANTITY = re.compile(r"(?P<num>[0-9]+(?:\.[0-9]+)?)(?P<suffix>m|k|M|G|T|P|E|Ki|Mi|Gi|Ti|Pi|Ei)?")
_SUFFIX = {
    None: Decimal(1), "m": Decimal("0.001"), "k": Decimal(10**3), "M": Decimal(10**6), "G": Decimal(10**9),
    "T": Decimal(10**12), "P": Decimal(10**15), "E": Decimal(10**18), "Ki": Decimal(2**10),
    "Mi": Decimal(2**20), "Gi": Decimal(2**30), "Ti": Decimal(2**40), "Pi": Decimal(2**50),
    "Ei": Decimal(2**60),
}  # fmt: skip
# the macros Kubernetes' cron parser takes besides five fields (@reboot and @every are not schedules)
_MACROS = ("@yearly", "@annually", "@monthly", "@weekly", "@daily", "@midnight", "@hourly")


def dns_label(option: str, value: str, *, max_len: int = 63, starts_with_letter: bool = True) -> str:
    """``value`` if it is a DNS label Kubernetes accepts as a name (RFC 1035: what a Service needs)."""
    pattern = _DNS_1035 if starts_with_letter else _DNS_1123
    if not isinstance(value, str) or len(value) > max_len or not pattern.fullmatch(value):
        first = "a lowercase letter" if starts_with_letter else "a lowercase letter or digit"
        raise InvalidOptionError(
            f"{option} must be a DNS label: at most {max_len} lowercase letters, digits and '-', starting "
            f"with {first} and ending with a letter or digit, got {value!r:.80}"
        )
    return value


def image_ref(option: str, value: str) -> str:
    """``value`` if it reads as a container image reference (``[registry/]name[:tag][@sha256:...]``)."""
    if not isinstance(value, str) or len(value) > 255 or not _IMAGE.fullmatch(value):
        raise InvalidOptionError(
            f"{option} must be an image reference like registry.example.com/team/fraud:3 (lowercase "
            f"repository, optional :tag and @sha256:digest), got {value!r:.120}"
        )
    return value


def quantity(option: str, value: str, *, cpu: bool) -> float:
    """A Kubernetes resource quantity as a number (cores for CPU, bytes for memory); it must be > 0."""
    match = _QUANTITY.fullmatch(value) if isinstance(value, str) else None
    example = "500m or 2" if cpu else "512Mi or 2Gi"
    if match is None:
        raise InvalidOptionError(
            f"{option} must be a Kubernetes quantity such as {example}, got {value!r:.40}"
        )
    try:
        amount = Decimal(match["num"]) * _SUFFIX[match["suffix"]]
    except InvalidOperation:  # pragma: no cover - the pattern admits only decimal numbers
        raise InvalidOptionError(f"{option}: {value!r} is not a number") from None
    if amount <= 0:
        raise InvalidOptionError(f"{option} must be more than 0, got {value!r}")
    if cpu and amount < Decimal("0.001"):
        raise InvalidOptionError(f"{option} must be at least 1m (a thousandth of a core), got {value!r}")
    return float(amount)


def in_range(option: str, value: int, low: int, high: int) -> int:
    """``value`` if ``low <= value <= high`` (an integer, not a bool)."""
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise InvalidOptionError(f"{option} must be an integer in {low}..{high}, got {value!r}")
    return value


def cron(option: str, value: str) -> str:
    """``value`` if it is a schedule a CronJob accepts: five cron fields (checked by croniter) or one of
    the macros. The Kubernetes schema takes any string; a bad one is refused only by the API server."""
    schedule = value.strip() if isinstance(value, str) else ""
    if schedule in _MACROS:
        return schedule
    if schedule.startswith(("TZ=", "CRON_TZ=")):
        raise InvalidOptionError(
            f"{option}: give the time zone with --time-zone, not in the schedule ({value!r})"
        )
    croniter = require("croniter", "schedule", f"checking {option}")
    fields = schedule.split()
    if len(fields) != 5 or not croniter.croniter.is_valid(schedule):
        raise InvalidOptionError(
            f"{option} must be five cron fields (minute hour day-of-month month day-of-week), e.g. "
            f"'0 2 * * *', or one of {', '.join(_MACROS)}; got {value!r:.80}"
        )
    # croniter takes more than Kubernetes' parser (robfig/cron): no L, no #, day-of-week 0-6 only
    if any(c in schedule for c in "L#"):
        raise InvalidOptionError(f"{option}: Kubernetes' cron has no 'L' or '#' fields, got {value!r:.80}")
    if any(int(n) > 6 for n in re.findall(r"[0-9]+", fields[4].split("/")[0])):
        raise InvalidOptionError(
            f"{option}: day-of-week must be 0-6 (Sunday is 0) for Kubernetes, got {value!r}"
        )
    return schedule
