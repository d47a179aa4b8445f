import { describe, expect, it } from 'vitest'
import type { CtiEvent } from '@/cti/client'
import {
  initialFigures,
  initialPhone,
  type PhoneState,
  reducePhone,
  restorePhone,
  setMuted,
  stateSecondsNow,
  updateFigures,
  utilisation,
} from '@/softphone/phone'

const T0 = Date.parse('2024-05-06T09:00:00Z')
const at = (seconds: number) => new Date(T0 + seconds * 1000).toISOString()

function run(events: CtiEvent[], start: PhoneState = initialPhone(T0)) {
  let phone = start
  let figures = initialFigures(T0)
  for (const event of events) {
    const now = Date.parse(String(event.at))
    const next = reducePhone(phone, event, now)
    figures = updateFigures(figures, phone, next, now)
    phone = next
  }
  return { phone, figures }
}

const state = (s: number, name: string, extra: Record<string, unknown> = {}): CtiEvent => ({
  type: 'agent.state',
  agent_id: '8001',
  state: name,
  reason: null,
  since: at(s),
  at: at(s),
  ...extra,
})
const offer = (s: number, callId = 'c1'): CtiEvent => ({
  type: 'call.offered',
  at: at(s),
  call_id: callId,
  ani: null,
  ani_masked: '138****5678',
  dnis: '4001',
  region: '广东 深圳',
  queue: 'sales',
  waited_seconds: 12.5,
  data: { menu: '1', language: 'zh' },
})
const call = (s: number, type: string, callId = 'c1', extra: Record<string, unknown> = {}): CtiEvent => ({ type, at: at(s), call_id: callId, ...extra })

describe('the softphone state', () => {
  it('walks a call from offer to wrap-up and back to ready', () => {
    const ringing = run([state(0, 'ready'), offer(10), state(10, 'ringing', { call_id: 'c1' })]).phone
    expect(ringing.agentState).toBe('ringing')
    expect(ringing.call).toMatchObject({ callId: 'c1', phase: 'ringing', aniMasked: '138****5678', region: '广东 深圳', queue: 'sales', waitedSeconds: 12.5 })
    expect(ringing.call!.data).toEqual({ menu: '1', language: 'zh' })

    const talking = run([state(0, 'ready'), offer(10), call(14, 'call.answered'), state(14, 'on_call', { call_id: 'c1' })]).phone
    expect(talking.call).toMatchObject({ phase: 'connected', answeredAt: T0 + 14_000 })

    const held = reducePhone(talking, call(20, 'call.held'), T0 + 20_000)
    expect(held.call).toMatchObject({ phase: 'held', heldSince: T0 + 20_000 })
    const resumed = reducePhone(held, call(30, 'call.resumed'), T0 + 30_000)
    expect(resumed.call).toMatchObject({ phase: 'connected', heldSince: null })

    const ended = reducePhone(resumed, call(74, 'call.ended', 'c1', { cause: 'remote_hangup' }), T0 + 74_000)
    expect(ended.call).toBeNull()
    expect(ended.wrapUp).toMatchObject({ talkSeconds: 60, cause: 'remote_hangup', since: T0 + 74_000 })
    expect(ended.wrapUp!.call.callId).toBe('c1')

    const acw = reducePhone(ended, state(74, 'wrap_up', { call_id: 'c1' }), T0 + 74_000)
    expect(acw.agentState).toBe('wrap_up')
    expect(acw.wrapUp!.call.callId).toBe('c1')
    const back = reducePhone(acw, state(90, 'ready'), T0 + 90_000)
    expect(back.wrapUp).toBeNull()
    expect(back.agentState).toBe('ready')
    expect(back.stateSince).toBe(T0 + 90_000)
  })

  it('takes the agent state before the answer event as the answer', () => {
    const { phone } = run([state(0, 'ready'), offer(5), state(8, 'on_call', { call_id: 'c1' }), call(8, 'call.answered')])
    expect(phone.call).toMatchObject({ phase: 'connected', answeredAt: T0 + 8_000 })
  })

  it('makes wrap-up from the ended call even when the wrap_up state comes first', () => {
    const { phone } = run([state(0, 'ready'), offer(5), call(6, 'call.answered'), state(40, 'wrap_up', { call_id: 'c1' }), call(40, 'call.ended')])
    expect(phone.call).toBeNull()
    expect(phone.wrapUp).toMatchObject({ talkSeconds: 34 })
  })

  it('has no after-call work for a call that ended while ringing, and counts it as missed', () => {
    const { phone, figures } = run([state(0, 'ready'), offer(5), call(25, 'call.ended', 'c1', { cause: 'no_answer' }), state(25, 'not_ready', { reason: 'no_answer' })])
    expect(phone.call).toBeNull()
    expect(phone.wrapUp).toBeNull()
    expect(phone.reason).toBe('no_answer')
    expect(figures).toMatchObject({ offered: 1, answered: 0, missed: 1 })
  })

  it('ignores events of other calls, unknown states and unknown event types', () => {
    const { phone } = run([state(0, 'ready'), offer(5), call(6, 'call.answered')])
    expect(reducePhone(phone, call(7, 'call.held', 'other'), T0)).toBe(phone)
    expect(reducePhone(phone, call(7, 'call.ended', 'other'), T0)).toBe(phone)
    expect(reducePhone(phone, state(7, 'dancing'), T0)).toBe(phone)
    expect(reducePhone(phone, { type: 'wallboard', at: at(7) }, T0)).toBe(phone)
    // A second offer during a connected call does not replace it.
    expect(reducePhone(phone, offer(8, 'c2'), T0).call!.callId).toBe('c1')
  })

  it('shows a ringing call from the agent state alone when the offer was missed', () => {
    const { phone } = run([state(0, 'ready'), state(3, 'ringing', { call_id: 'c7' })])
    expect(phone.call).toMatchObject({ callId: 'c7', phase: 'ringing', aniMasked: null })
  })

  it('mutes only the current call', () => {
    const { phone } = run([state(0, 'ready'), offer(5), call(6, 'call.answered')])
    expect(setMuted(phone, 'c1', true).call!.muted).toBe(true)
    expect(setMuted(phone, 'c2', true)).toBe(phone)
  })

  it('clears the call on logout', () => {
    const { phone } = run([state(0, 'ready'), offer(5), call(6, 'call.answered'), state(9, 'logged_out')])
    expect(phone.call).toBeNull()
    expect(phone.wrapUp).toBeNull()
  })
})

describe('restoring from hello (reload or reconnect)', () => {
  it('brings back a held call with its screen pop', () => {
    const restored = restorePhone(initialPhone(T0), {
      reply_to: '1',
      ok: true,
      agent: { agent_id: '8001', state: 'on_hold', reason: null, since: at(50), device: 'browser' },
      calls: [{ call_id: 'c3', state: 'held', ani_masked: '139****0000', queue: 'support', answered_at: at(20), data: { id: '42' } }],
    }, T0 + 60_000)
    expect(restored.agentState).toBe('on_hold')
    expect(restored.call).toMatchObject({ callId: 'c3', phase: 'held', answeredAt: T0 + 20_000, aniMasked: '139****0000', queue: 'support' })
  })

  it('drops a call the server no longer has, and starts wrap-up when the server says so', () => {
    const { phone } = run([state(0, 'ready'), offer(5), call(6, 'call.answered')])
    const ready = restorePhone(phone, { state: 'ready', calls: [] }, T0 + 30_000)
    expect(ready.call).toBeNull()
    const acw = restorePhone(phone, { state: 'wrap_up', since: at(30), calls: [] }, T0 + 35_000)
    expect(acw.call).toBeNull()
    expect(acw.wrapUp).toMatchObject({ talkSeconds: 24 })
  })
})

describe("the agent's own figures", () => {
  it('adds time in each state, answered calls, talk and wrap-up time', () => {
    const { phone, figures } = run([
      state(0, 'ready'),
      offer(60),
      state(60, 'ringing', { call_id: 'c1' }),
      call(64, 'call.answered'),
      state(64, 'on_call', { call_id: 'c1' }),
      call(184, 'call.ended'),
      state(184, 'wrap_up', { call_id: 'c1' }),
      state(214, 'ready'),
    ])
    expect(figures).toMatchObject({ offered: 1, answered: 1, missed: 0, talkSeconds: 120, wrapUps: 1, wrapUpSeconds: 30 })
    expect(figures.stateSeconds).toMatchObject({ ready: 60, ringing: 4, on_call: 120, wrap_up: 30 })
    const seconds = stateSecondsNow(figures, phone, T0 + 274_000)
    expect(seconds.ready).toBe(120)
    expect(utilisation(seconds)).toBeCloseTo(154 / 274)
  })

  it('has no utilisation before any logged-in time', () => {
    expect(utilisation({})).toBeNull()
    expect(utilisation({ logged_out: 100 })).toBeNull()
  })
})
