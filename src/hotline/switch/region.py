"""The caller's region from the number (TEL-06): Chinese area codes and mobile segments, other countries.

phonenumbers carries the geocoding tables (area code → city, mobile segment → province and city), so the
region needs no data of our own. Withheld and internal numbers have no region.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import phonenumbers
from phonenumbers import carrier, geocoder


@dataclass(frozen=True)
class Region:
    country: str  # ISO 3166 code, e.g. "CN"
    name_zh: str  # e.g. "上海市", "江苏省常州市"
    name_en: str  # e.g. "Shanghai", "Changzhou, Jiangsu"
    carrier: str  # mobile operator when known, e.g. "China Mobile"
    e164: str

    def as_data(self) -> dict[str, str]:
        return {
            "country": self.country,
            "name_zh": self.name_zh,
            "name_en": self.name_en,
            "carrier": self.carrier,
            "e164": self.e164,
        }


@lru_cache(maxsize=65536)
def region_of(number: str | None, default_country: str = "CN") -> Region | None:
    """Region of a caller number, or None for withheld, internal or invalid numbers."""
    if not number:
        return None
    digits = number.strip()
    try:
        parsed = phonenumbers.parse(digits, default_country)
    except phonenumbers.NumberParseException:
        return None
    if not phonenumbers.is_valid_number(parsed):
        return None
    return Region(
        country=phonenumbers.region_code_for_number(parsed) or "",
        name_zh=geocoder.description_for_number(parsed, "zh"),
        name_en=geocoder.description_for_number(parsed, "en"),
        carrier=carrier.name_for_number(parsed, "en"),
        e164=phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164),
    )
