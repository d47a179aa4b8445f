import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest'
import { ICE_GATHERING_TIMEOUT_MS, MediaChannel, MediaError } from '@/softphone/media'

class FakeTrack {
  enabled = true
  stopped = false
  stop() {
    this.stopped = true
  }
}

class FakeStream {
  constructor(readonly tracks: FakeTrack[]) {}
  getAudioTracks() {
    return this.tracks
  }
  getTracks() {
    return this.tracks
  }
}

class FakePeerConnection extends EventTarget {
  iceGatheringState: RTCIceGatheringState = 'new'
  connectionState: RTCPeerConnectionState = 'new'
  localDescription: { type: string; sdp: string } | null = null
  remoteDescription: { type: string; sdp: string } | null = null
  added: FakeTrack[] = []
  closed = false
  log: string[] = []
  constructor(readonly config: RTCConfiguration) {
    super()
  }
  addTrack(track: FakeTrack) {
    this.added.push(track)
    this.log.push('addTrack')
  }
  async createOffer() {
    this.log.push('createOffer')
    return { type: 'offer', sdp: 'v=0 offer-without-candidates' }
  }
  async setLocalDescription(description: { type: string; sdp: string }) {
    this.log.push('setLocalDescription')
    this.localDescription = description
    this.iceGatheringState = 'gathering'
  }
  async setRemoteDescription(description: { type: string; sdp: string }) {
    this.log.push('setRemoteDescription')
    this.remoteDescription = description
  }
  finishGathering() {
    this.localDescription = { type: 'offer', sdp: 'v=0 offer-with-candidates a=candidate:1' }
    this.iceGatheringState = 'complete'
    this.dispatchEvent(new Event('icegatheringstatechange'))
  }
  close() {
    this.closed = true
  }
}

function setup(options: { denied?: boolean } = {}) {
  const tracks = [new FakeTrack()]
  const pcs: FakePeerConnection[] = []
  const channel = new MediaChannel({
    deps: {
      getUserMedia: async (constraints) => {
        expect(constraints.audio).toBeTruthy()
        expect(constraints.video).toBe(false)
        if (options.denied) throw Object.assign(new Error('denied'), { name: 'NotAllowedError' })
        return new FakeStream(tracks) as unknown as MediaStream
      },
      createPeerConnection: (config) => {
        const pc = new FakePeerConnection(config)
        pcs.push(pc)
        return pc as unknown as RTCPeerConnection
      },
    },
  })
  return { channel, tracks, pcs }
}

const flush = async () => {
  for (let i = 0; i < 10; i++) await Promise.resolve()
}

describe('the browser media channel', () => {
  beforeEach(() => vi.useFakeTimers())
  afterEach(() => vi.useRealTimers())

  it('sends the offer only after ICE gathering completes, then sets the answer', async () => {
    const { channel, tracks, pcs } = setup()
    const offers: string[] = []
    const states: string[] = []
    channel.onState((state) => states.push(state))
    const started = channel.start(async (sdp) => {
      offers.push(sdp)
      return 'v=0 answer'
    })
    await flush()
    const pc = pcs[0]
    expect(pc.added).toEqual(tracks)
    expect(offers).toEqual([]) // still gathering
    pc.finishGathering()
    await started
    expect(offers).toEqual(['v=0 offer-with-candidates a=candidate:1'])
    expect(pc.remoteDescription).toEqual({ type: 'answer', sdp: 'v=0 answer' })
    expect(pc.log).toEqual(['addTrack', 'createOffer', 'setLocalDescription', 'setRemoteDescription'])
    expect(states).toEqual(['starting', 'connected'])
  })

  it('sends what it has when gathering does not finish in time', async () => {
    const { channel } = setup()
    const offers: string[] = []
    const started = channel.start(async (sdp) => {
      offers.push(sdp)
      return 'v=0 answer'
    })
    await flush()
    vi.advanceTimersByTime(ICE_GATHERING_TIMEOUT_MS)
    await started
    expect(offers).toEqual(['v=0 offer-without-candidates'])
  })

  it('explains a refused microphone', async () => {
    const { channel, pcs } = setup({ denied: true })
    const error = await channel.start(async () => 'x').catch((failure) => failure)
    expect(error).toBeInstanceOf(MediaError)
    expect(error.code).toBe('microphone_denied')
    expect(channel.state).toBe('failed')
    expect(pcs).toHaveLength(0)
  })

  it('fails cleanly when the server refuses the offer, releasing the microphone', async () => {
    const { channel, pcs, tracks } = setup()
    const started = channel.start(async () => {
      throw new Error('no media ports')
    }).catch((failure) => failure)
    await flush()
    pcs[0].finishGathering()
    const error = await started
    expect(error).toBeInstanceOf(MediaError)
    expect(error.code).toBe('negotiation_failed')
    expect(pcs[0].closed).toBe(true)
    expect(tracks[0].stopped).toBe(true)
    expect(channel.state).toBe('failed')
  })

  it('mutes by disabling the microphone track, also across a restart', async () => {
    const { channel, tracks, pcs } = setup()
    const started = channel.start(async () => 'v=0 answer')
    await flush()
    pcs[0].finishGathering()
    await started
    channel.setMuted(true)
    expect(tracks[0].enabled).toBe(false)
    channel.setMuted(false)
    expect(tracks[0].enabled).toBe(true)
    channel.stop()
    expect(pcs[0].closed).toBe(true)
    expect(channel.state).toBe('closed')
  })
})
