"""Caller region from the number (TEL-06)."""

from hotline.switch.region import region_of


def test_chinese_landline_area_code_gives_the_city() -> None:
    region = region_of("02155551234")
    assert region is not None
    assert region.name_zh == "上海市" and region.country == "CN"
    assert region.e164 == "+862155551234"


def test_chinese_mobile_segment_gives_province_and_city() -> None:
    region = region_of("13912345678")
    assert region is not None
    assert "江苏" in region.name_zh and region.carrier == "China Mobile"


def test_foreign_number_with_country_code() -> None:
    region = region_of("+14155550100")
    assert region is not None and region.country == "US"


def test_withheld_and_internal_numbers_have_no_region() -> None:
    assert region_of(None) is None
    assert region_of("") is None
    assert region_of("1001") is None
    assert region_of("anonymous") is None
