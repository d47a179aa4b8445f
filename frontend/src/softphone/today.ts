// An agent's figures for today from the CDR projection (GET /api/v1/cdrs), AGT-08: calls answered,
// average talk and average after-call work. Rows of other agents (a supervisor's wider scope) are skipped.

export interface CdrRow {
  call_id?: string
  agent_id?: string | null
  last_agent_id?: string | null
  talk_seconds?: number | null
  wrapup_seconds?: number | null
  connected_seconds?: number | null
  outcome?: string | null
  [field: string]: unknown
}

export interface TodayFigures {
  answered: number
  talkSeconds: number
  wrapUpSeconds: number
  averageTalkSeconds: number | null
  averageWrapUpSeconds: number | null
}

export function todayFigures(rows: CdrRow[], agentId: string): TodayFigures {
  let answered = 0
  let talk = 0
  let wrapUp = 0
  for (const row of rows) {
    if (row.agent_id !== agentId && row.last_agent_id !== agentId) continue
    const talked = typeof row.talk_seconds === 'number' ? row.talk_seconds : row.connected_seconds
    if (typeof talked !== 'number') continue
    answered += 1
    talk += talked
    if (typeof row.wrapup_seconds === 'number') wrapUp += row.wrapup_seconds
  }
  return {
    answered,
    talkSeconds: talk,
    wrapUpSeconds: wrapUp,
    averageTalkSeconds: answered ? talk / answered : null,
    averageWrapUpSeconds: answered ? wrapUp / answered : null,
  }
}

/** Today's figures from the ACD's view of the agent (`figures` in the `hello` reply's agent). */
export function figuresFromAcd(figures: unknown): TodayFigures | null {
  if (!figures || typeof figures !== 'object') return null
  const f = figures as Record<string, unknown>
  const number = (value: unknown) => (typeof value === 'number' && Number.isFinite(value) ? value : null)
  const answered = number(f.calls_handled) ?? number(f.offers_answered)
  if (answered === null) return null
  const talk = number(f.talk_seconds) ?? 0
  const wrapUp = number(f.wrap_up_seconds) ?? 0
  return {
    answered,
    talkSeconds: talk,
    wrapUpSeconds: wrapUp,
    averageTalkSeconds: number(f.average_talk_seconds) ?? (answered ? talk / answered : null),
    averageWrapUpSeconds: number(f.average_wrap_up_seconds) ?? (answered ? wrapUp / answered : null),
  }
}

/** Midnight today in the browser's zone, as the ISO text the API takes. */
export function startOfToday(now = new Date()): string {
  const start = new Date(now)
  start.setHours(0, 0, 0, 0)
  return start.toISOString()
}
