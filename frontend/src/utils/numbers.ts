// Showing callers' numbers (号码隐藏, TEN/AGT-07): the server decides who may see a full number and sends
// `ani_masked` for everyone else; the UI never shows more than the server allowed, and masks on its own
// when it only has a full number but the user's roles do not include seeing one.

/** A phone number with its middle digits hidden: 13812345678 → 138****5678, 02088886666 → 020****6666.
 * Short numbers (extensions) keep their first and last digit; text without digits is returned as is. */
export function maskNumber(number: string): string {
  const trimmed = number.trim()
  const prefix = trimmed.startsWith('+') ? '+' : ''
  const digits = trimmed.replace(/[^0-9]/g, '')
  if (!digits) return trimmed
  if (digits.length <= 4) return prefix + digits[0] + '*'.repeat(digits.length - 1)
  if (digits.length <= 7) return prefix + digits.slice(0, 1) + '*'.repeat(digits.length - 2) + digits.slice(-1)
  // At least four digits hidden, never more than seven shown: 138****5678, ****6666 for 8 digits.
  const hidden = Math.max(4, digits.length - 7)
  const keepStart = digits.length - hidden - 4
  return prefix + digits.slice(0, keepStart) + '*'.repeat(hidden) + digits.slice(-4)
}

export function isMasked(number: string): boolean {
  return /[*•x×]/.test(number)
}

export interface CallerDisplay {
  text: string
  masked: boolean
  withheld: boolean
}

/** What to show for a caller (FM-10: a withheld number says so instead of showing nothing). */
export function callerDisplay(ani: string | null | undefined, aniMasked: string | null | undefined, mayViewFull: boolean): CallerDisplay {
  const masked = aniMasked?.trim() || null
  const full = ani?.trim() || null
  if (full && mayViewFull && !isMasked(full)) return { text: full, masked: false, withheld: false }
  if (masked) return { text: masked, masked: isMasked(masked) || masked !== full, withheld: false }
  if (full) return isMasked(full) ? { text: full, masked: true, withheld: false } : { text: maskNumber(full), masked: true, withheld: false }
  return { text: '', masked: false, withheld: true }
}
