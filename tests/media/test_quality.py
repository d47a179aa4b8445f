"""The E-model estimate: known points and the direction of every impairment."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hotline.media.quality import delay_impairment, estimate, mos_from_r, r_factor


def test_g711_without_impairment_is_toll_quality() -> None:
    assert r_factor("PCMU") == pytest.approx(93.2, abs=0.05)
    assert mos_from_r(r_factor("PCMA")) == pytest.approx(4.41, abs=0.02)


def test_five_percent_loss_is_clearly_worse() -> None:
    clean = mos_from_r(r_factor("PCMU"))
    lossy = mos_from_r(r_factor("PCMU", loss_percent=5.0))
    assert lossy < 4.0 < clean
    assert clean - lossy > 0.4


def test_delay_hurts_beyond_the_usual_limits() -> None:
    assert delay_impairment(0.0) == pytest.approx(0.0, abs=1e-9)
    assert r_factor("PCMU", one_way_delay_ms=150) > 88  # G.114's 150 ms is still fine
    assert r_factor("PCMU", one_way_delay_ms=400) < 70  # 400 ms is not


def test_mos_scale_limits() -> None:
    assert mos_from_r(-5) == 1.0
    assert mos_from_r(120) == 4.5
    assert mos_from_r(50) == pytest.approx(2.58, abs=0.01)


@given(
    st.sampled_from(["pcmu", "pcma", "g722", "opus"]),
    st.floats(0, 40),
    st.floats(0, 40),
    st.floats(0, 500),
    st.floats(0, 500),
)
def test_more_loss_or_delay_never_improves_quality(
    codec: str, loss_a: float, loss_b: float, delay_a: float, delay_b: float
) -> None:
    low_loss, high_loss = sorted((loss_a, loss_b))
    short, long = sorted((delay_a, delay_b))
    assert r_factor(codec, high_loss, short) <= r_factor(codec, low_loss, short) + 1e-9
    assert r_factor(codec, low_loss, long) <= r_factor(codec, low_loss, short) + 1e-9
    r_values = sorted([r_factor(codec, low_loss, short), r_factor(codec, high_loss, long)])
    assert mos_from_r(r_values[0]) <= mos_from_r(r_values[1])


def test_estimate_adds_up_the_delays() -> None:
    result = estimate("opus", loss_ratio=0.01, network_delay_ms=40, jitter_buffer_ms=60)
    assert result.one_way_delay_ms == pytest.approx(20 + 6.5 + 40 + 60)
    assert result.loss_percent == pytest.approx(1.0)
    assert 4.0 < result.mos < 4.41
    with pytest.raises(ValueError, match="codec"):
        estimate("gsm", 0.0, 0.0, 0.0)
