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

/** Midnight today in the browser's zone, as the ISO text the API takes. */
export function startOfToday(now = new Date()): string {
  const start = new Date(now)
  start.setHours(0, 0, 0, 0)
  return start.toISOString()
}
