"""Voice-quality estimate per call leg: a simplified ITU-T G.107 E-model (narrowband rating scale).

R = Ro - Is - Id - Ie,eff + A, with the G.107 default values for everything the media engine cannot observe
(loudness ratings, room noise, sidetone, talker echo loss TELR 65 dB), so with no impairment R = 93.2.
- Id: talker echo (Idte, with the echo path delay T equal to the mouth-to-ear delay), listener echo (Idle) and
  absolute delay (Idd), from the one-way mouth-to-ear delay.
- Ie,eff = Ie + (95 - Ie) * Ppl / (Ppl / BurstR + Bpl): the codec's equipment impairment Ie and packet-loss
  robustness Bpl (`CODEC_IMPAIRMENTS`), the loss percentage Ppl and burst ratio (1 = random loss).
- MOS-CQ from R (G.107 Annex B).

API:
- `CodecImpairment(ie, bpl, algorithmic_delay_ms)`; `CODEC_IMPAIRMENTS` by codec name; `impairment_for(name)`.
- `delay_impairment(one_way_delay_ms) -> float` (Id), `effective_equipment_impairment(...) -> float` (Ie,eff).
- `r_factor(codec, loss_percent=0, one_way_delay_ms=0, burst_ratio=1, advantage=0) -> float`.
- `mos_from_r(r) -> float`.
- `mouth_to_ear_delay_ms(codec, network_delay_ms, jitter_buffer_ms, frame_ms=20) -> float`.
- `estimate(codec, loss_ratio, network_delay_ms, jitter_buffer_ms, ...) -> QualityEstimate(r, mos, ...)`:
  what a session keeps per call (OPS-09), from RTCP loss, RTT/2 and its jitter buffer depth.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

# G.107 defaults give Ro - Is = 93.35 and Idle = 0.15 at zero delay: R = 93.2.
_RO_MINUS_IS = 93.35
_TELR_DB = 65.0
_WEPL_DB = 110.0
_NO_DBM0P = -61.18  # total noise power at the default values
_ROE = -1.5 * (_NO_DBM0P + 2.0)


@dataclass(frozen=True, slots=True)
class CodecImpairment:
    ie: float  # equipment impairment without loss
    bpl: float  # packet-loss robustness
    algorithmic_delay_ms: float  # look-ahead beyond the frame itself


# G.711 with packet loss concealment: G.113 Appendix I (Ie 0, Bpl 25.1). G.722 and Opus have no narrowband
# table entry; these are planning values on the same scale: no coding impairment at their usual bit rates
# (wideband speech is not worse than G.711), G.722's simple concealment less robust than G.711 Appendix I,
# Opus' built-in concealment more robust.
CODEC_IMPAIRMENTS: dict[str, CodecImpairment] = {
    "pcmu": CodecImpairment(0.0, 25.1, 0.0),
    "pcma": CodecImpairment(0.0, 25.1, 0.0),
    "g722": CodecImpairment(0.0, 20.0, 1.5),
    "opus": CodecImpairment(0.0, 30.0, 6.5),
}


def impairment_for(codec: str) -> CodecImpairment:
    try:
        return CODEC_IMPAIRMENTS[codec.lower()]
    except KeyError:
        raise ValueError(f"no E-model figures for codec {codec!r}") from None


def _talker_echo(t_ms: float) -> float:
    if t_ms <= 0:
        return 0.0
    terv = (
        _TELR_DB - 40.0 * math.log10((1 + t_ms / 10.0) / (1 + t_ms / 150.0)) + 6.0 * math.exp(-0.3 * t_ms**2)
    )
    re = 80.0 + 2.5 * (terv - 14.0)
    diff = _ROE - re
    # the formula dips slightly below zero for very short delays; echo never improves quality
    return max(0.0, (diff / 2.0 + math.sqrt(diff * diff / 4.0 + 100.0) - 1.0) * (1.0 - math.exp(-t_ms)))


def _listener_echo(t_ms: float) -> float:
    tr = 2.0 * t_ms  # round-trip delay of the listener echo
    rle = 10.5 * (_WEPL_DB + 7.0) * math.pow(tr + 1.0, -0.25)
    diff = _RO_MINUS_IS + 1.42 - rle  # Ro at the defaults is 94.77
    return diff / 2.0 + math.sqrt(diff * diff / 4.0 + 169.0)


def _absolute_delay(ta_ms: float) -> float:
    if ta_ms <= 100.0:
        return 0.0
    x = math.log10(ta_ms / 100.0) / math.log10(2.0)
    return 25.0 * (math.pow(1 + x**6, 1 / 6) - 3 * math.pow(1 + (x / 3) ** 6, 1 / 6) + 2)


def delay_impairment(one_way_delay_ms: float) -> float:
    """Id for a mouth-to-ear delay, taking the echo path delay T equal to it (G.107 7.3), minus the default
    0.15 that Ro - Is already absorbs at zero delay."""
    t = max(0.0, one_way_delay_ms)
    return _talker_echo(t) + (_listener_echo(t) - _listener_echo(0.0)) + _absolute_delay(t)


def effective_equipment_impairment(
    ie: float, bpl: float, loss_percent: float, burst_ratio: float = 1.0
) -> float:
    ppl = min(100.0, max(0.0, loss_percent))
    if ppl == 0.0:
        return ie
    return ie + (95.0 - ie) * ppl / (ppl / max(burst_ratio, 1e-9) + bpl)


def r_factor(
    codec: str,
    loss_percent: float = 0.0,
    one_way_delay_ms: float = 0.0,
    burst_ratio: float = 1.0,
    advantage: float = 0.0,
) -> float:
    figures = impairment_for(codec)
    ie_eff = effective_equipment_impairment(figures.ie, figures.bpl, loss_percent, burst_ratio)
    return _RO_MINUS_IS - 0.15 - delay_impairment(one_way_delay_ms) - ie_eff + advantage


def mos_from_r(r: float) -> float:
    """MOS-CQ (conversational quality, 1.0..4.5) from the rating R (G.107 Annex B)."""
    if r <= 0:
        return 1.0
    if r >= 100:
        return 4.5
    return 1.0 + 0.035 * r + r * (r - 60.0) * (100.0 - r) * 7e-6


def mouth_to_ear_delay_ms(
    codec: str, network_delay_ms: float, jitter_buffer_ms: float, frame_ms: float = 20.0
) -> float:
    """One-way delay: packetisation (a frame), codec look-ahead, network and the receiver's jitter buffer."""
    return frame_ms + impairment_for(codec).algorithmic_delay_ms + network_delay_ms + jitter_buffer_ms


@dataclass(frozen=True, slots=True)
class QualityEstimate:
    r: float
    mos: float
    one_way_delay_ms: float
    loss_percent: float


def estimate(
    codec: str,
    loss_ratio: float,
    network_delay_ms: float,
    jitter_buffer_ms: float,
    frame_ms: float = 20.0,
    burst_ratio: float = 1.0,
) -> QualityEstimate:
    """Quality of one direction of a leg; `loss_ratio` counts packets lost in the network and those the jitter
    buffer discarded as late (0.0..1.0); `network_delay_ms` is typically half the RTCP round-trip time."""
    delay = mouth_to_ear_delay_ms(codec, network_delay_ms, jitter_buffer_ms, frame_ms)
    loss_percent = 100.0 * min(1.0, max(0.0, loss_ratio))
    r = r_factor(codec, loss_percent, delay, burst_ratio)
    return QualityEstimate(r=r, mos=mos_from_r(r), one_way_delay_ms=delay, loss_percent=loss_percent)
