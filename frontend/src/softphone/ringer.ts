// The ringing sound for an offered call, made with WebAudio (no audio file to load or bundle): a soft
// double ring of two mixed sine tones, repeated every 3 seconds until answered, declined or withdrawn.

export interface RingerOptions {
  createContext?: () => AudioContext
  volume?: number
}

const CYCLE_SECONDS = 3
// (start, duration) of each ring burst within a cycle
const BURSTS: Array<[number, number]> = [
  [0, 0.4],
  [0.6, 0.4],
]
const FREQUENCIES = [440, 480]

export class Ringer {
  private context: AudioContext | null = null
  private timer: ReturnType<typeof setInterval> | null = null
  private nodes: AudioScheduledSourceNode[] = []
  private readonly createContext: () => AudioContext
  private readonly volume: number

  constructor(options: RingerOptions = {}) {
    this.createContext = options.createContext ?? (() => new AudioContext())
    this.volume = options.volume ?? 0.15
  }

  get ringing(): boolean {
    return this.timer !== null
  }

  /** Creates (and resumes) the audio context during a user gesture, so a later ring may sound: browsers
   * keep audio locked until the page has been clicked. */
  unlock(): void {
    try {
      this.ensureContext()
      void this.context?.resume().catch(() => undefined)
    } catch {
      // no WebAudio: calls still show visually
    }
  }

  start(): void {
    if (this.timer !== null) return
    let context: AudioContext
    try {
      context = this.ensureContext()
    } catch {
      return
    }
    void context.resume().catch(() => undefined)
    this.scheduleCycle(context)
    this.timer = setInterval(() => this.scheduleCycle(context), CYCLE_SECONDS * 1000)
  }

  stop(): void {
    if (this.timer !== null) clearInterval(this.timer)
    this.timer = null
    for (const node of this.nodes) {
      try {
        node.stop()
      } catch {
        // already stopped
      }
    }
    this.nodes = []
  }

  private ensureContext(): AudioContext {
    if (!this.context) this.context = this.createContext()
    return this.context
  }

  private scheduleCycle(context: AudioContext): void {
    this.nodes = this.nodes.slice(-8)
    const start = context.currentTime + 0.05
    for (const [offset, duration] of BURSTS) {
      const gain = context.createGain()
      const at = start + offset
      // Short ramps: no clicks at the burst edges.
      gain.gain.setValueAtTime(0, at)
      gain.gain.linearRampToValueAtTime(this.volume, at + 0.02)
      gain.gain.setValueAtTime(this.volume, at + duration - 0.02)
      gain.gain.linearRampToValueAtTime(0, at + duration)
      gain.connect(context.destination)
      for (const frequency of FREQUENCIES) {
        const oscillator = context.createOscillator()
        oscillator.type = 'sine'
        oscillator.frequency.value = frequency
        oscillator.connect(gain)
        oscillator.start(at)
        oscillator.stop(at + duration)
        this.nodes.push(oscillator)
      }
    }
  }
}
