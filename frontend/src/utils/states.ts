import type { AgentState } from '@/api/types'

/** Colours of agent states, the same on every page (the wallboard legend, grid cells, state label). */
export const STATE_COLORS: Record<AgentState, string> = {
  ready: '#16a34a',
  not_ready: '#d97706',
  reserved: '#6366f1',
  ringing: '#9333ea',
  on_call: '#2563eb',
  on_hold: '#ea580c',
  wrap_up: '#0891b2',
  outbound: '#0d9488',
  logged_out: '#9ca3af',
}

export const stateColor = (state: string | null | undefined): string =>
  STATE_COLORS[(state ?? 'logged_out') as AgentState] ?? STATE_COLORS.logged_out
