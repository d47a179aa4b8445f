// The browser agent's media channel (docs/cti.md `webrtc.offer`): one RTCPeerConnection with the
// microphone, set up once at sign-in and kept for the whole session. The server bridges each call into
// it, so answering needs no new negotiation and starts at once.
//
//   const channel = new MediaChannel()
//   channel.onRemoteStream((stream) => (audio.srcObject = stream))
//   await channel.start((sdp) => cti.command('webrtc.offer', { sdp }).then((reply) => String(reply.sdp)))

export type MediaChannelState = 'idle' | 'starting' | 'connected' | 'failed' | 'closed'

export interface MediaDeps {
  getUserMedia: (constraints: MediaStreamConstraints) => Promise<MediaStream>
  createPeerConnection: (config: RTCConfiguration) => RTCPeerConnection
}

export class MediaError extends Error {
  readonly code: 'microphone_denied' | 'microphone_missing' | 'negotiation_failed' | 'unsupported'
  constructor(code: MediaError['code'], message: string) {
    super(message)
    this.name = 'MediaError'
    this.code = code
  }
}

/** The offer is sent once ICE gathering completes (the server does not trickle), or after this long with
 * the candidates found so far (host candidates come at once; a slow STUN server must not block sign-in). */
export const ICE_GATHERING_TIMEOUT_MS = 3_000

function defaultDeps(): MediaDeps {
  return {
    getUserMedia: (constraints) => {
      if (!navigator.mediaDevices?.getUserMedia) {
        return Promise.reject(new MediaError('unsupported', 'This browser cannot use a microphone here'))
      }
      return navigator.mediaDevices.getUserMedia(constraints)
    },
    createPeerConnection: (config) => new RTCPeerConnection(config),
  }
}

export function waitForIceGathering(pc: RTCPeerConnection, timeoutMs = ICE_GATHERING_TIMEOUT_MS): Promise<void> {
  if (pc.iceGatheringState === 'complete') return Promise.resolve()
  return new Promise((resolve) => {
    const done = () => {
      clearTimeout(timer)
      pc.removeEventListener('icegatheringstatechange', check)
      pc.removeEventListener('icecandidate', onCandidate)
      resolve()
    }
    const check = () => {
      if (pc.iceGatheringState === 'complete') done()
    }
    // A null candidate also marks the end of gathering in older browsers.
    const onCandidate = (event: RTCPeerConnectionIceEvent) => {
      if (!event.candidate) done()
    }
    const timer = setTimeout(done, timeoutMs)
    pc.addEventListener('icegatheringstatechange', check)
    pc.addEventListener('icecandidate', onCandidate)
  })
}

type Listener<T> = (value: T) => void

export class MediaChannel {
  state: MediaChannelState = 'idle'
  private pc: RTCPeerConnection | null = null
  private stream: MediaStream | null = null
  private muted = false
  private readonly deps: MediaDeps
  private readonly iceServers: RTCIceServer[]
  private stateListeners = new Set<Listener<MediaChannelState>>()
  private remoteListeners = new Set<Listener<MediaStream>>()

  constructor(options: { deps?: MediaDeps; iceServers?: RTCIceServer[] } = {}) {
    this.deps = options.deps ?? defaultDeps()
    this.iceServers = options.iceServers ?? []
  }

  onState(listener: Listener<MediaChannelState>): () => void {
    this.stateListeners.add(listener)
    return () => this.stateListeners.delete(listener)
  }

  onRemoteStream(listener: Listener<MediaStream>): () => void {
    this.remoteListeners.add(listener)
    return () => this.remoteListeners.delete(listener)
  }

  get peerConnection(): RTCPeerConnection | null {
    return this.pc
  }

  /** Opens the microphone, negotiates with the server through `exchange` (offer SDP in, answer SDP
   * out), and keeps the connection. Throws MediaError with a code the UI can explain. */
  async start(exchange: (offerSdp: string) => Promise<string>): Promise<void> {
    this.stop()
    this.setState('starting')
    try {
      this.stream = await this.deps.getUserMedia({
        audio: { echoCancellation: true, noiseSuppression: true, autoGainControl: true },
        video: false,
      })
    } catch (error) {
      this.setState('failed')
      throw microphoneError(error)
    }
    const pc = this.deps.createPeerConnection({ iceServers: this.iceServers })
    this.pc = pc
    try {
      for (const track of this.stream.getAudioTracks()) {
        track.enabled = !this.muted
        pc.addTrack(track, this.stream)
      }
      pc.addEventListener('track', (event) => {
        const stream = event.streams[0] ?? new MediaStream([event.track])
        for (const listener of this.remoteListeners) listener(stream)
      })
      pc.addEventListener('connectionstatechange', () => {
        if (this.pc !== pc) return
        if (pc.connectionState === 'connected') this.setState('connected')
        else if (pc.connectionState === 'failed') this.setState('failed')
      })
      const offer = await pc.createOffer()
      await pc.setLocalDescription(offer)
      await waitForIceGathering(pc)
      const sdp = pc.localDescription?.sdp ?? offer.sdp ?? ''
      const answer = await exchange(sdp)
      if (this.pc !== pc) return // stopped meanwhile
      await pc.setRemoteDescription({ type: 'answer', sdp: answer })
      // Connected for signalling purposes: ICE may report `connected` a moment later.
      if (this.state === 'starting') this.setState('connected')
    } catch (error) {
      if (this.pc === pc) {
        this.stop()
        this.setState('failed')
      }
      if (error instanceof MediaError) throw error
      throw new MediaError('negotiation_failed', error instanceof Error ? error.message : String(error))
    }
  }

  /** Local mute: the microphone track sends silence at once, whatever the server does. */
  setMuted(muted: boolean): void {
    this.muted = muted
    for (const track of this.stream?.getAudioTracks() ?? []) track.enabled = !muted
  }

  get isMuted(): boolean {
    return this.muted
  }

  stop(): void {
    for (const track of this.stream?.getTracks() ?? []) track.stop()
    this.stream = null
    const pc = this.pc
    this.pc = null
    if (pc) {
      try {
        pc.close()
      } catch {
        // already closed
      }
      this.setState('closed')
    }
  }

  private setState(state: MediaChannelState): void {
    if (this.state === state) return
    this.state = state
    for (const listener of this.stateListeners) listener(state)
  }
}

function microphoneError(error: unknown): MediaError {
  if (error instanceof MediaError) return error
  const name = error instanceof Error ? error.name : ''
  if (name === 'NotAllowedError' || name === 'SecurityError') {
    return new MediaError('microphone_denied', 'The browser was not allowed to use the microphone')
  }
  if (name === 'NotFoundError' || name === 'OverconstrainedError') {
    return new MediaError('microphone_missing', 'No microphone was found')
  }
  return new MediaError('microphone_missing', error instanceof Error ? error.message : String(error))
}
