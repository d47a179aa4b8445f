// Durations and the server clock. Times in events are the server's; the offset between its clock and
// the browser's is learnt from event timestamps, so "time in state" does not drift with a wrong PC clock.

/** 75 → "01:15", 3725 → "1:02:05"; negative or missing → "00:00". */
export function formatDuration(seconds: number | null | undefined): string {
  if (seconds == null || !Number.isFinite(seconds) || seconds < 0) return '00:00'
  const whole = Math.floor(seconds)
  const h = Math.floor(whole / 3600)
  const m = Math.floor((whole % 3600) / 60)
  const s = whole % 60
  const mm = String(m).padStart(2, '0')
  const ss = String(s).padStart(2, '0')
  return h > 0 ? `${h}:${mm}:${ss}` : `${mm}:${ss}`
}

export function formatPercent(value: number | null | undefined, digits = 0): string {
  if (value == null || !Number.isFinite(value)) return '—'
  return `${(value * 100).toFixed(digits)}%`
}

export class ServerClock {
  /** serverTime - browserTime, in ms. */
  offset = 0
  private samples = 0

  /** Learns from an event's `at` (ISO) received just now. Network delay only makes `at` look earlier,
   * so the largest offset seen recently is the best estimate; it is smoothed toward new samples. */
  observe(at: unknown, browserNow = Date.now()): void {
    if (typeof at !== 'string') return
    const server = Date.parse(at)
    if (Number.isNaN(server)) return
    const sample = server - browserNow
    if (this.samples === 0) this.offset = sample
    else this.offset = sample > this.offset ? sample : this.offset * 0.9 + sample * 0.1
    this.samples++
  }

  now(browserNow = Date.now()): number {
    return browserNow + this.offset
  }
}

export const serverClock = new ServerClock()
