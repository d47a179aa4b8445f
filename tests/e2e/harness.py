"""What the end-to-end tests drive: headless Debian Chromium (Playwright, fake media devices), the demo's
web users, screenshots, audio checks on WAV files, and a network namespace with only loopback.

- ``CHROMIUM`` / ``CHROMIUM_ARGS``: the browser and its flags (never ``playwright install``).
- ``rerun_in_loopback_namespace(nodeid, basetemp)``: Chromium offers ICE host candidates on every interface;
  inside ``unshare -n`` only 127.0.0.1 exists. Returns False when already there, else runs the test again
  inside one and returns True once it passed (raises with its output otherwise).
- ``demo_web_users(banner)``: ``{username: password}`` of the web users ``hotline demo`` printed.
- ``Screenshots(directory)``: ``take(page, name)`` writes ``NN-name.png`` and copies it to
  /tmp/hotline-screenshots for people to look at.
- ``PC_SPY``: an init script that keeps every RTCPeerConnection the page makes in ``window.__hotlinePcs``;
  ``INBOUND_AUDIO``: a page function returning ``{packets, energy}`` of the newest one's inbound audio.
- ``LoopbackBaresip``: ``tests.integration.peers.Baresip`` bound to 127.0.0.1 as its network address
  (baresip finds none in a namespace with only loopback).
- ``tone_wav(path, seconds, hz)``, ``wav_frames(path)``, ``recording_channels(path)`` (8 kHz),
  ``peak(samples)``, ``dominant_hz(samples, rate)``.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
import wave
from pathlib import Path

import numpy as np

from tests.integration.peers import Baresip

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--use-fake-ui-for-media-stream",
    "--use-fake-device-for-media-stream",
    # ICE host candidates on 127.0.0.1 (the only interface in the test's namespace)
    "--allow-loopback-in-peer-connection",
    # the agent hears the caller without a click first
    "--autoplay-policy=no-user-gesture-required",
]
SHOTS_FOR_PEOPLE = Path("/tmp/hotline-screenshots")
INSIDE_NAMESPACE = "HOTLINE_TEST_PRIVATE_NETNS"

PC_SPY = """(() => {
  const Native = window.RTCPeerConnection;
  if (!Native || window.__hotlinePcs) return;
  window.__hotlinePcs = [];
  window.RTCPeerConnection = new Proxy(Native, {
    construct(target, args, newTarget) {
      const pc = Reflect.construct(target, args, newTarget);
      window.__hotlinePcs.push(pc);
      return pc;
    },
  });
})();"""

INBOUND_AUDIO = """async () => {
  const pcs = (window.__hotlinePcs || []).filter(pc => pc.connectionState !== 'closed');
  const pc = pcs[pcs.length - 1];
  const result = {packets: 0, energy: 0, connection: pc ? pc.connectionState : 'none'};
  if (!pc) return result;
  (await pc.getStats()).forEach(report => {
    if (report.type === 'inbound-rtp' && report.kind === 'audio') {
      result.packets = report.packetsReceived || 0;
      result.energy = report.totalAudioEnergy || 0;
    }
  });
  return result;
}"""


def only_loopback() -> bool:
    return [name for _index, name in socket.if_nameindex()] == ["lo"]


def rerun_in_loopback_namespace(nodeid: str, basetemp: Path, timeout: float = 280.0) -> bool:
    """Run test `nodeid` again inside a network namespace that has only loopback (see the module doc)."""
    if only_loopback():
        return False
    if os.environ.get(INSIDE_NAMESPACE) or not shutil.which("unshare") or not shutil.which("ip"):
        import pytest

        pytest.skip("needs a private network namespace with only loopback (unshare -n, ip)")
    log_path = basetemp.parent / f"{basetemp.name}-namespace.log"
    with log_path.open("wb") as log_file:  # a file, not a pipe: browser helpers may outlive the run
        inner = subprocess.Popen(
            [
                "unshare",
                "-n",
                "sh",
                "-c",
                'ip link set lo up && exec "$0" -m pytest -q --tb=short -p no:cacheprovider'
                ' --basetemp "$1" "$2"',
                sys.executable,
                str(basetemp),
                nodeid,
            ],
            env={**os.environ, INSIDE_NAMESPACE: "1"},
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            inner.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(inner.pid, 9)
            inner.wait(10)
    text = log_path.read_text(errors="replace")
    if inner.returncode != 0 and "unshare failed" in text:
        import pytest

        pytest.skip("network namespaces are not permitted here")
    assert inner.returncode == 0 and "1 passed" in text, text[-8000:]
    return True


class LoopbackBaresip(Baresip):
    def __init__(self, workdir: Path, account: str, audio_file: Path) -> None:
        super().__init__(workdir, account, audio_file)
        with (self.workdir / "config").open("a") as config:
            config.write("net_interface 127.0.0.1\n")


def demo_web_users(banner: str) -> dict[str, str]:
    """The web users' passwords from the banner `hotline demo` prints when it creates the tenant."""
    users: dict[str, str] = {}
    for match in re.finditer(r"^\s+(\S+)\s+(\S+)\s+(tenant_admin|supervisor)\s*$", banner, re.MULTILINE):
        users[match.group(1)] = match.group(2)
    return users


class Screenshots:
    """Full-page screenshots numbered in the order taken, also copied for people to look at."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.directory.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(SHOTS_FOR_PEOPLE, ignore_errors=True)
        SHOTS_FOR_PEOPLE.mkdir(parents=True, exist_ok=True)
        self.taken: list[Path] = []

    def take(self, page: object, name: str) -> Path:
        path = self.directory / f"{len(self.taken) + 1:02d}-{name}.png"
        page.screenshot(path=str(path), full_page=True, timeout=15_000)  # type: ignore[attr-defined]
        shutil.copy(path, SHOTS_FOR_PEOPLE / path.name)
        self.taken.append(path)
        return path


def tone_wav(path: Path, seconds: float, hz: int) -> Path:
    """An 8 kHz mono 16-bit sine at -14 dBFS (what the softphone sends)."""
    rate = 8000
    t = np.arange(int(seconds * rate)) / rate
    samples = (0.2 * 32767 * np.sin(2 * np.pi * hz * t)).astype("<i2")
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes(samples.tobytes())
    return path


def wav_frames(path: Path) -> tuple[np.ndarray, int]:
    """Mono int16 samples (the first channel) and the rate of a PCM WAV file."""
    with wave.open(str(path), "rb") as wav:
        rate, channels, width = wav.getframerate(), wav.getnchannels(), wav.getsampwidth()
        data = wav.readframes(wav.getnframes())
    assert width == 2, f"{path}: {width * 8}-bit samples"
    return np.frombuffer(data, dtype="<i2").reshape(-1, channels)[:, 0], rate


def peak(samples: np.ndarray) -> int:
    return int(np.abs(samples.astype(np.int32)).max()) if samples.size else 0


def dominant_hz(samples: np.ndarray, rate: int) -> float:
    """The frequency with the most energy (a tone's pitch)."""
    spectrum = np.abs(np.fft.rfft(samples.astype(np.float64)))
    return float(np.fft.rfftfreq(samples.size, 1 / rate)[int(spectrum[1:].argmax()) + 1])


def recording_channels(path: Path) -> list[np.ndarray]:
    """Each channel of a recording (any format PyAV reads) as int16 samples at 8 kHz."""
    import av

    with av.open(str(path)) as container:
        stream = container.streams.audio[0]
        resampler = av.AudioResampler(format="s16p", rate=8000)
        planes: list[list[np.ndarray]] = []
        for frame in container.decode(stream):
            for out in resampler.resample(frame):
                array = out.to_ndarray()  # (channels, samples) for a planar format
                if not planes:
                    planes = [[] for _ in range(array.shape[0])]
                for index, row in enumerate(array):
                    planes[index].append(row)
    return [np.concatenate(rows) if rows else np.zeros(0, dtype=np.int16) for rows in planes]
