// The agent softphone's state as a pure function of CTI events (docs/cti.md): the agent state, the
// current call (ringing → connected ⇄ held), after-call work, and the agent's own figures for the
// session (AGT-03, AGT-08). The server owns the truth (FM-05): local state only ever follows events and
// the `hello` snapshot, never a button press by itself.

import type { AgentState } from '@/api/types'
import type { CtiEvent } from '@/cti/client'

export interface CallInfo {
  callId: string
  ani: string | null
  aniMasked: string | null
  dnis: string | null
  region: string | null
  queue: string | null
  waitedSeconds: number | null
  data: Record<string, unknown>
  /** Server time (ms) of the offer. */
  offeredAt: number
}

export type CallPhase = 'ringing' | 'connected' | 'held'

export interface ActiveCall extends CallInfo {
  phase: CallPhase
  answeredAt: number | null
  heldSince: number | null
  muted: boolean
}

export interface WrapUp {
  call: CallInfo
  since: number
  /** Talk time of the call, when it was answered. */
  talkSeconds: number | null
  cause: string | null
}

export interface PhoneState {
  agentState: AgentState
  reason: string | null
  /** Server time (ms) the agent entered the state. */
  stateSince: number
  call: ActiveCall | null
  wrapUp: WrapUp | null
  /** The call that ended last; wrap-up may be announced after the call's end event. */
  lastCall: { call: CallInfo; answeredAt: number | null; endedAt: number; cause: string | null } | null
}

export interface Figures {
  /** Server time the figures began (sign-in, or start of the day's session). */
  since: number
  offered: number
  answered: number
  missed: number
  talkSeconds: number
  wrapUpSeconds: number
  wrapUps: number
  /** Seconds spent in each state, up to the last state change. */
  stateSeconds: Partial<Record<AgentState, number>>
}

export function initialPhone(now: number): PhoneState {
  return { agentState: 'logged_out', reason: null, stateSince: now, call: null, wrapUp: null, lastCall: null }
}

export function initialFigures(now: number): Figures {
  return { since: now, offered: 0, answered: 0, missed: 0, talkSeconds: 0, wrapUpSeconds: 0, wrapUps: 0, stateSeconds: {} }
}

const KNOWN_STATES = new Set<AgentState>([
  'logged_out',
  'ready',
  'not_ready',
  'reserved',
  'ringing',
  'on_call',
  'on_hold',
  'wrap_up',
  'outbound',
])

function text(value: unknown): string | null {
  if (typeof value === 'string' && value !== '') return value
  if (typeof value === 'number') return String(value)
  return null
}

function time(value: unknown, fallback: number): number {
  if (typeof value === 'string') {
    const parsed = Date.parse(value)
    if (!Number.isNaN(parsed)) return parsed
  }
  return fallback
}

/** The screen-pop fields of a `call.offered` event (or a call in the `hello` reply). */
export function callInfo(fields: Record<string, unknown>, now: number): CallInfo {
  const data = fields.data && typeof fields.data === 'object' && !Array.isArray(fields.data) ? fields.data : {}
  const waited = fields.waited_seconds
  return {
    callId: String(fields.call_id ?? fields.id ?? ''),
    ani: text(fields.ani),
    aniMasked: text(fields.ani_masked),
    dnis: text(fields.dnis),
    region: text(fields.region),
    queue: text(fields.queue),
    waitedSeconds: typeof waited === 'number' && Number.isFinite(waited) ? waited : null,
    data: data as Record<string, unknown>,
    offeredAt: time(fields.at ?? fields.offered_at, now),
  }
}

function endCall(state: PhoneState, call: ActiveCall, now: number, cause: string | null): PhoneState {
  const info: CallInfo = stripCall(call)
  const lastCall = { call: info, answeredAt: call.answeredAt, endedAt: now, cause }
  if (call.answeredAt === null) {
    // Ended while ringing: declined, withdrawn, or taken back by the ACD; no after-call work.
    return { ...state, call: null, lastCall }
  }
  const wrapUp: WrapUp = {
    call: info,
    since: now,
    talkSeconds: Math.max(0, (now - call.answeredAt) / 1000),
    cause,
  }
  return { ...state, call: null, wrapUp, lastCall }
}

function stripCall(call: ActiveCall): CallInfo {
  const { phase: _phase, answeredAt: _answered, heldSince: _held, muted: _muted, ...info } = call
  return info
}

/** The next phone state after one CTI event; events of other types return `state` unchanged. */
export function reducePhone(state: PhoneState, event: CtiEvent, now: number): PhoneState {
  const at = time(event.at, now)
  const sameCall = (id: unknown) => state.call !== null && id != null && String(id) === state.call.callId
  switch (event.type) {
    case 'agent.state': {
      const next = event.state as AgentState
      if (!KNOWN_STATES.has(next)) return state
      let result: PhoneState = {
        ...state,
        agentState: next,
        reason: text(event.reason),
        stateSince: time(event.since, at),
      }
      const callId = text(event.call_id)
      if (next === 'logged_out' || next === 'ready' || next === 'not_ready') {
        result = { ...result, call: null, wrapUp: null }
      } else if (next === 'wrap_up') {
        if (result.call) result = endCall(result, result.call, at, null)
        if (!result.wrapUp && result.lastCall && result.lastCall.answeredAt !== null) {
          const last = result.lastCall
          result = {
            ...result,
            wrapUp: { call: last.call, since: result.stateSince, talkSeconds: (last.endedAt - last.answeredAt!) / 1000, cause: last.cause },
          }
        }
      } else if (next === 'ringing' && callId && !result.call) {
        // The offer event was missed (e.g. replay window passed): show what we know.
        result = { ...result, call: newCall(callInfo({ call_id: callId }, at), 'ringing') }
      } else if ((next === 'on_call' || next === 'on_hold') && result.call) {
        const call = result.call
        result = {
          ...result,
          call: {
            ...call,
            phase: next === 'on_hold' ? 'held' : 'connected',
            answeredAt: call.answeredAt ?? result.stateSince,
            heldSince: next === 'on_hold' ? (call.heldSince ?? result.stateSince) : null,
          },
        }
      } else if ((next === 'on_call' || next === 'on_hold') && callId) {
        result = {
          ...result,
          call: {
            ...newCall(callInfo({ call_id: callId }, at), next === 'on_hold' ? 'held' : 'connected'),
            answeredAt: result.stateSince,
            heldSince: next === 'on_hold' ? result.stateSince : null,
          },
        }
      }
      return result
    }
    case 'call.offered': {
      if (state.call && state.call.phase !== 'ringing' && !sameCall(event.call_id)) return state
      if (sameCall(event.call_id)) {
        // A replayed offer refreshes the pop but keeps the call's progress.
        return { ...state, call: { ...state.call!, ...callInfo(event, at), offeredAt: state.call!.offeredAt } }
      }
      return { ...state, call: newCall(callInfo(event, at), 'ringing'), wrapUp: null }
    }
    case 'call.answered': {
      if (!sameCall(event.call_id)) return state
      const call = state.call!
      return { ...state, call: { ...call, phase: 'connected', answeredAt: call.answeredAt ?? at, heldSince: null } }
    }
    case 'call.held': {
      if (!sameCall(event.call_id)) return state
      const call = state.call!
      return { ...state, call: { ...call, phase: 'held', heldSince: call.heldSince ?? at, answeredAt: call.answeredAt ?? at } }
    }
    case 'call.resumed': {
      if (!sameCall(event.call_id)) return state
      return { ...state, call: { ...state.call!, phase: 'connected', heldSince: null } }
    }
    case 'call.ended': {
      if (!sameCall(event.call_id)) return state
      return endCall(state, state.call!, at, text(event.cause))
    }
    default:
      return state
  }
}

function newCall(info: CallInfo, phase: CallPhase): ActiveCall {
  return { ...info, phase, answeredAt: null, heldSince: null, muted: false }
}

export function setMuted(state: PhoneState, callId: string, muted: boolean): PhoneState {
  if (!state.call || state.call.callId !== callId) return state
  return { ...state, call: { ...state.call, muted } }
}

/** The phone state from the server's `hello` reply (after a reload or reconnect, AGT-13). The reply
 * carries the agent's state (`state` or `agent`) and its calls (`calls`). */
export function restorePhone(state: PhoneState, reply: Record<string, unknown>, now: number): PhoneState {
  const agent = (reply.agent && typeof reply.agent === 'object' ? reply.agent : reply) as Record<string, unknown>
  const stateName = typeof agent.state === 'string' ? agent.state : typeof reply.state === 'string' ? reply.state : null
  let result = state
  if (stateName && KNOWN_STATES.has(stateName as AgentState)) {
    result = {
      ...result,
      agentState: stateName as AgentState,
      reason: text(agent.reason),
      stateSince: time(agent.since, now),
    }
  }
  const calls = Array.isArray(reply.calls) ? (reply.calls as Array<Record<string, unknown>>) : []
  const current = calls.find((call) => call && typeof call === 'object')
  if (current) {
    const info = callInfo(current, now)
    const known = result.call && result.call.callId === info.callId ? result.call : null
    const status = String(current.state ?? current.status ?? current.phase ?? '')
    const phase: CallPhase =
      status === 'held' || status === 'on_hold'
        ? 'held'
        : status === 'ringing' || status === 'offered'
          ? 'ringing'
          : 'connected'
    const answeredAt = phase === 'ringing' ? null : time(current.answered_at, known?.answeredAt ?? result.stateSince)
    result = {
      ...result,
      call: {
        ...info,
        offeredAt: known?.offeredAt ?? info.offeredAt,
        phase,
        answeredAt,
        heldSince: phase === 'held' ? (known?.heldSince ?? result.stateSince) : null,
        muted: Boolean(current.muted ?? known?.muted ?? false),
      },
    }
  } else if (result.call && ['ready', 'not_ready', 'logged_out', 'wrap_up'].includes(result.agentState)) {
    result = result.agentState === 'wrap_up' ? endCall(result, result.call, result.stateSince, null) : { ...result, call: null }
  }
  if (result.agentState !== 'wrap_up') result = { ...result, wrapUp: null }
  else if (!result.wrapUp) {
    const info = result.lastCall?.call ?? callInfo({ call_id: text(agent.call_id) ?? '' }, now)
    result = { ...result, wrapUp: { call: info, since: result.stateSince, talkSeconds: null, cause: null } }
  }
  return result
}

/** The agent's own figures after a transition from `before` to `after` at server time `now`. */
export function updateFigures(figures: Figures, before: PhoneState, after: PhoneState, now: number): Figures {
  let result = figures
  if (before.agentState !== after.agentState) {
    const spent = Math.max(0, (now - Math.max(before.stateSince, figures.since)) / 1000)
    result = {
      ...result,
      stateSeconds: { ...result.stateSeconds, [before.agentState]: (result.stateSeconds[before.agentState] ?? 0) + spent },
    }
  }
  const newOffer = after.call && after.call.phase === 'ringing' && (!before.call || before.call.callId !== after.call.callId)
  if (newOffer) result = { ...result, offered: result.offered + 1 }
  const answeredNow = after.call && after.call.answeredAt !== null && (!before.call || before.call.answeredAt === null || before.call.callId !== after.call.callId)
  if (answeredNow) result = { ...result, answered: result.answered + 1 }
  if (before.call && !after.call && after.lastCall && after.lastCall.call.callId === before.call.callId) {
    if (after.lastCall.answeredAt === null) result = { ...result, missed: result.missed + 1 }
    else result = { ...result, talkSeconds: result.talkSeconds + Math.max(0, (after.lastCall.endedAt - after.lastCall.answeredAt) / 1000) }
  }
  if (before.wrapUp && !after.wrapUp) {
    result = {
      ...result,
      wrapUps: result.wrapUps + 1,
      wrapUpSeconds: result.wrapUpSeconds + Math.max(0, (now - before.wrapUp.since) / 1000),
    }
  }
  return result
}

/** Seconds in each state including the running one. */
export function stateSecondsNow(figures: Figures, phone: PhoneState, now: number): Partial<Record<AgentState, number>> {
  const running = Math.max(0, (now - Math.max(phone.stateSince, figures.since)) / 1000)
  return { ...figures.stateSeconds, [phone.agentState]: (figures.stateSeconds[phone.agentState] ?? 0) + running }
}

/** Share of logged-in time spent on calls and after-call work (工时利用率 for the session). */
export function utilisation(seconds: Partial<Record<AgentState, number>>): number | null {
  const busy = (seconds.on_call ?? 0) + (seconds.on_hold ?? 0) + (seconds.wrap_up ?? 0) + (seconds.ringing ?? 0) + (seconds.outbound ?? 0)
  const loggedIn = Object.entries(seconds)
    .filter(([state]) => state !== 'logged_out')
    .reduce((sum, [, value]) => sum + (value ?? 0), 0)
  return loggedIn > 0 ? busy / loggedIn : null
}
