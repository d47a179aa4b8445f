import { describe, expect, it } from 'vitest'
import { callerDisplay, maskNumber } from '@/utils/numbers'
import { formatDuration, formatPercent, ServerClock } from '@/utils/time'

describe('number masking', () => {
  it('hides the middle of mobile and landline numbers', () => {
    expect(maskNumber('13812345678')).toBe('138****5678')
    expect(maskNumber('+8613812345678')).toBe('+861******5678')
    expect(maskNumber('020-8888 6666')).toBe('020****6666')
    expect(maskNumber('4001234567')).toBe('40****4567')
    expect(maskNumber('88886666')).toBe('****6666')
  })

  it('keeps little of short numbers and leaves text alone', () => {
    expect(maskNumber('1001')).toBe('1***')
    expect(maskNumber('95588')).toBe('9***8')
    expect(maskNumber('anonymous')).toBe('anonymous')
  })

  it('never reveals a digit the mask hides', () => {
    for (let length = 1; length <= 20; length++) {
      const masked = maskNumber('9'.repeat(length))
      const shown = masked.replace(/\*/g, '').length
      expect(masked).toHaveLength(length)
      expect(length - shown).toBeGreaterThanOrEqual(length >= 8 ? 4 : Math.min(length - 1, 1))
      expect(shown).toBeLessThanOrEqual(7)
    }
  })

  it('shows what the server masked, the full number only to those allowed, and says when it is withheld', () => {
    expect(callerDisplay(null, '138****5678', false)).toEqual({ text: '138****5678', masked: true, withheld: false })
    expect(callerDisplay('13812345678', '138****5678', true)).toEqual({ text: '13812345678', masked: false, withheld: false })
    expect(callerDisplay('13812345678', '138****5678', false).text).toBe('138****5678')
    // The server sent a full number without a mask: an agent without the permission still sees it masked.
    expect(callerDisplay('13812345678', null, false)).toEqual({ text: '138****5678', masked: true, withheld: false })
    expect(callerDisplay('', '', false)).toEqual({ text: '', masked: false, withheld: true })
    expect(callerDisplay(null, null, true).withheld).toBe(true)
  })
})

describe('time', () => {
  it('formats durations and percentages', () => {
    expect(formatDuration(0)).toBe('00:00')
    expect(formatDuration(75.9)).toBe('01:15')
    expect(formatDuration(3725)).toBe('1:02:05')
    expect(formatDuration(-3)).toBe('00:00')
    expect(formatDuration(null)).toBe('00:00')
    expect(formatPercent(0.834)).toBe('83%')
    expect(formatPercent(null)).toBe('—')
  })

  it("learns the server's clock from event times", () => {
    const clock = new ServerClock()
    clock.observe('2024-05-06T09:00:10Z', Date.parse('2024-05-06T09:00:00Z'))
    expect(clock.offset).toBe(10_000)
    expect(clock.now(Date.parse('2024-05-06T09:01:00Z'))).toBe(Date.parse('2024-05-06T09:01:10Z'))
    clock.observe('garbage')
    expect(clock.offset).toBe(10_000)
  })
})
