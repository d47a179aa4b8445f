import { createPinia, setActivePinia } from 'pinia'
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest'
import { CtiClient } from '@/cti/client'
import { FakeSocket, fakeFactory } from './fakeSocket'

let client: CtiClient
vi.mock('@/cti/connection', () => ({ sharedCti: () => client, closeSharedCti: () => client.close() }))
const { countByState, normalizeSnapshot, shouldPoll, useWallboardStore, POLL_INTERVAL_MS, EVENT_SILENCE_MS } = await import('@/stores/wallboard')

const snapshot = (waiting: number) => ({
  agents: [
    { agent_id: '8001', state: 'on_call', since: '2024-05-06T09:00:00Z' },
    { agent_id: '8002', state: 'ready' },
    { agent_id: '8003', state: 'ready' },
  ],
  queues: [{ queue: 'sales', waiting, longest_wait_seconds: 30, offered_today: 10, answered_today: 8, abandoned_today: 1, service_level_today: 0.8, abandon_rate_today: 0.1 }],
})

describe('the wallboard', () => {
  let liveCalls = 0
  beforeEach(() => {
    vi.useFakeTimers()
    setActivePinia(createPinia())
    FakeSocket.reset()
    liveCalls = 0
    client = new CtiClient({ url: 'ws://test/api/v1/cti', socketFactory: fakeFactory, random: () => 0.5 })
    vi.stubGlobal(
      'fetch',
      vi.fn(async (url: string) => {
        if (String(url).startsWith('/api/v1/live')) {
          liveCalls += 1
          return new Response(JSON.stringify(snapshot(liveCalls)), { status: 200 })
        }
        return new Response(JSON.stringify({ items: [{ code: 'lunch', name: '就餐' }], total: 1 }), { status: 200 })
      }),
    )
  })
  afterEach(() => {
    vi.useRealTimers()
    vi.unstubAllGlobals()
  })

  it('takes its snapshot from GET /live, then from CTI events, polling only while events do not flow', async () => {
    const wallboard = useWallboardStore()
    wallboard.start()
    await vi.advanceTimersByTimeAsync(10)
    expect(liveCalls).toBe(1)
    expect(wallboard.source).toBe('poll')
    expect(wallboard.totals.waiting).toBe(1)
    // CTI not open yet: the fallback polls every 2 s.
    await vi.advanceTimersByTimeAsync(POLL_INTERVAL_MS)
    expect(liveCalls).toBe(2)
    const socket = FakeSocket.last()
    socket.accept()
    socket.receive({ type: 'wallboard', seq: 1, at: new Date().toISOString(), ...snapshot(7) })
    expect(wallboard.source).toBe('cti')
    expect(wallboard.totals.waiting).toBe(7)
    expect(wallboard.stateCounts).toEqual({ on_call: 1, ready: 2 })
    await vi.advanceTimersByTimeAsync(EVENT_SILENCE_MS - POLL_INTERVAL_MS)
    expect(liveCalls).toBe(2) // events flow: no polling
    await vi.advanceTimersByTimeAsync(2 * POLL_INTERVAL_MS)
    expect(liveCalls).toBe(3) // silence: check with the API
    socket.drop()
    await vi.advanceTimersByTimeAsync(POLL_INTERVAL_MS)
    expect(liveCalls).toBe(4)
    expect(wallboard.reasonCodes.map((code) => code.code)).toEqual(['lunch'])
    wallboard.stop()
    await vi.advanceTimersByTimeAsync(5 * POLL_INTERVAL_MS)
    expect(liveCalls).toBe(4)
  })

  it('forces an agent state through the CTI command', async () => {
    const wallboard = useWallboardStore()
    wallboard.start()
    const socket = FakeSocket.last()
    socket.accept()
    const done = wallboard.forceState('8002', 'not_ready')
    const sent = socket.lastSent('supervisor.force_state')
    expect(sent).toMatchObject({ agent_id: '8002', state: 'not_ready' })
    socket.reply(sent)
    await expect(done).resolves.toBeUndefined()
    wallboard.stop()
  })

  it('normalises snapshots and decides when to poll', () => {
    expect(normalizeSnapshot(null)).toEqual({ agents: [], queues: [], trunks: [] })
    expect(normalizeSnapshot({ type: 'wallboard', seq: 3, agents: [{ agent_id: '1', state: 'ready' }] }).agents).toHaveLength(1)
    expect(normalizeSnapshot({ snapshot: { queues: [{ queue: 'q' }] } }).queues).toHaveLength(1)
    expect(shouldPoll('reconnecting', Date.now(), Date.now())).toBe(true)
    expect(shouldPoll('open', null, 0)).toBe(true)
    expect(shouldPoll('open', 1000, 1000 + EVENT_SILENCE_MS)).toBe(false)
    expect(shouldPoll('open', 1000, 1001 + EVENT_SILENCE_MS)).toBe(true)
    expect(countByState({ agents: [], queues: [] })).toEqual({})
  })
})
