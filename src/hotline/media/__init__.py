"""Hotline's media engine.

The packet, codec and DTMF parts are sans-IO (bytes, numpy arrays and `now: float` in; packets, samples and
events out): `rtp`, `rtcp`, `quality`, `dtmf` and `codecs`. Nothing here imports the rest of Hotline.
"""
