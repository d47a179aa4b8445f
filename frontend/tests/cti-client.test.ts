import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest'
import { CtiClient, CtiCommandError, CtiDisconnectedError, CtiTimeoutError, ctiUrl, type CtiEvent } from '@/cti/client'
import { FakeSocket, fakeFactory } from './fakeSocket'

function client(options: Partial<ConstructorParameters<typeof CtiClient>[0]> = {}) {
  return new CtiClient({ url: 'ws://test/api/v1/cti', socketFactory: fakeFactory, random: () => 0.5, ...options })
}

describe('CtiClient', () => {
  beforeEach(() => {
    vi.useFakeTimers()
    FakeSocket.reset()
  })
  afterEach(() => {
    vi.useRealTimers()
  })

  it('builds the socket address from the page address', () => {
    expect(ctiUrl({ protocol: 'https:', host: 'cc.example.com' })).toBe('wss://cc.example.com/api/v1/cti')
    expect(ctiUrl({ protocol: 'http:', host: '127.0.0.1:8080' })).toBe('ws://127.0.0.1:8080/api/v1/cti')
  })

  it('says hello first and is open only once hello is answered', () => {
    const cti = client()
    const hellos: unknown[] = []
    cti.onHello((reply) => hellos.push(reply))
    cti.connect()
    const socket = FakeSocket.last()
    expect(cti.status).toBe('connecting')
    socket.open()
    const hello = socket.lastSent()
    expect(hello.op).toBe('hello')
    expect(hello).not.toHaveProperty('last_seq')
    expect(cti.status).toBe('connecting')
    socket.reply(hello, { state: 'logged_out', calls: [] })
    expect(cti.status).toBe('open')
    expect(hellos).toEqual([{ reply_to: hello.id, ok: true, state: 'logged_out', calls: [] }])
  })

  it('delivers events by type and to wildcard listeners, each sequence number once', () => {
    const cti = client()
    const offered: CtiEvent[] = []
    const all: CtiEvent[] = []
    cti.on('call.offered', (event) => offered.push(event))
    cti.on('*', (event) => all.push(event))
    cti.connect()
    const socket = FakeSocket.last()
    socket.accept()
    socket.receive({ type: 'call.offered', seq: 7, call_id: 'c1' })
    socket.receive({ type: 'agent.state', seq: 8, agent_id: '8001', state: 'ringing' })
    socket.receive({ type: 'call.offered', seq: 7, call_id: 'c1' }) // a repeat
    socket.receive({ type: 'agent.state', seq: 8, agent_id: '8001', state: 'ringing' }) // a repeat
    socket.receive('not json')
    socket.receive({ no_type: true })
    expect(offered.map((event) => event.seq)).toEqual([7])
    expect(all.map((event) => event.seq)).toEqual([7, 8])
    expect(cti.lastSeq).toBe(8)
  })

  it("delivers frames the server makes without a log entry, which carry the head's number", () => {
    const cti = client()
    const all: string[] = []
    cti.on('*', (event) => all.push(`${event.seq}:${event.type}`))
    cti.connect()
    const socket = FakeSocket.last()
    socket.accept()
    socket.receive({ type: 'call.offered', seq: 20, call_id: 'c1' })
    // The offer is withdrawn (browser phones' notice): same number as the last event, other type.
    socket.receive({ type: 'call.ended', seq: 20, call_id: 'c1', cause: 'withdrawn' })
    // Snapshots come every second with the head's number, and every one counts.
    socket.receive({ type: 'queue.counts', seq: 20, counts: { sales: 1 } })
    socket.receive({ type: 'queue.counts', seq: 20, counts: { sales: 2 } })
    socket.receive({ type: 'wallboard', seq: 20, agents: [], queues: [] })
    socket.receive({ type: 'wallboard', seq: 20, agents: [], queues: [] })
    expect(all).toEqual(['20:call.offered', '20:call.ended', '20:queue.counts', '20:queue.counts', '20:wallboard', '20:wallboard'])
    expect(cti.lastSeq).toBe(20)
  })

  it("resumes from the log's head given in hello even when no event came before the link dropped", () => {
    const cti = client()
    cti.connect()
    FakeSocket.last().accept({ last_seq: 311 })
    expect(cti.lastSeq).toBe(311)
    FakeSocket.last().drop()
    vi.advanceTimersByTime(1000)
    const second = FakeSocket.last()
    second.open()
    expect(second.lastSent('hello').last_seq).toBe(311)
    // The server's log started anew (a new database): its head is below ours, so we follow it.
    second.reply(second.lastSent('hello'), { last_seq: 4 })
    const seen: number[] = []
    cti.on('*', (event) => seen.push(event.seq!))
    second.receive({ type: 'agent.state', seq: 5, agent_id: '8001', state: 'ready' })
    expect(seen).toEqual([5])
  })

  it('reconnects after a lost connection and resumes from the last sequence number', () => {
    const cti = client({ reconnectMinMs: 500 })
    const seen: number[] = []
    const hellos: number[] = []
    cti.on('*', (event) => seen.push(event.seq!))
    cti.onHello(() => hellos.push(1))
    cti.connect()
    const first = FakeSocket.last()
    first.accept()
    first.receive({ type: 'agent.state', seq: 41, state: 'ready' })
    first.receive({ type: 'message', seq: 42, from: '班长', text: '注意' })
    first.drop()
    expect(cti.status).toBe('reconnecting')
    expect(FakeSocket.all).toHaveLength(1)
    vi.advanceTimersByTime(499)
    expect(FakeSocket.all).toHaveLength(1)
    vi.advanceTimersByTime(1)
    const second = FakeSocket.last()
    expect(second).not.toBe(first)
    second.open()
    expect(second.lastSent('hello').last_seq).toBe(42)
    second.reply(second.lastSent('hello'))
    // The server replays from 42 on; what was seen already is not applied twice.
    second.receive({ type: 'message', seq: 42, from: '班长', text: '注意' })
    second.receive({ type: 'call.offered', seq: 43, call_id: 'c9' })
    expect(seen).toEqual([41, 42, 43])
    expect(hellos).toHaveLength(2)
    expect(cti.status).toBe('open')
  })

  it('backs off exponentially up to a ceiling, and starts over after a success', () => {
    const cti = client({ reconnectMinMs: 500, reconnectMaxMs: 4000 })
    cti.connect()
    const delays: number[] = []
    for (let attempt = 0; attempt < 6; attempt++) {
      const socket = FakeSocket.last()
      socket.drop()
      const before = FakeSocket.all.length
      let waited = 0
      while (FakeSocket.all.length === before && waited < 60_000) {
        vi.advanceTimersByTime(100)
        waited += 100
      }
      delays.push(waited)
    }
    expect(delays).toEqual([500, 1000, 2000, 4000, 4000, 4000])
    FakeSocket.last().accept()
    expect(cti.attempts).toBe(0)
    FakeSocket.last().drop()
    vi.advanceTimersByTime(500)
    expect(FakeSocket.all).toHaveLength(8)
  })

  it('sends a ping every heartbeat interval and reconnects when a ping goes unanswered', () => {
    const cti = client({ heartbeatMs: 10_000, replyTimeoutMs: 5_000 })
    cti.connect()
    const socket = FakeSocket.last()
    socket.accept()
    vi.advanceTimersByTime(10_000)
    const ping = socket.lastSent('ping')
    socket.reply(ping)
    vi.advanceTimersByTime(5_000)
    expect(cti.status).toBe('open')
    vi.advanceTimersByTime(5_000) // second ping at 20 s, not answered
    expect(socket.sent.filter((message) => message.op === 'ping')).toHaveLength(2)
    vi.advanceTimersByTime(5_000)
    expect(socket.closedWith?.code).toBe(4000)
    expect(cti.status).toBe('reconnecting')
    vi.advanceTimersByTime(1_000)
    expect(FakeSocket.all).toHaveLength(2)
  })

  it('resolves commands with their reply and rejects refusals with the server error', async () => {
    const cti = client()
    cti.connect()
    const socket = FakeSocket.last()
    socket.accept()
    const ready = cti.command('agent.ready')
    const sent = socket.lastSent('agent.ready')
    expect(typeof sent.id).toBe('string')
    socket.reply(sent, { state: 'ready' })
    await expect(ready).resolves.toMatchObject({ ok: true, state: 'ready' })

    const answer = cti.command('call.answer', { call_id: 'c1' })
    const answerSent = socket.lastSent('call.answer')
    expect(answerSent.call_id).toBe('c1')
    socket.receive({ reply_to: answerSent.id, ok: false, error: { code: 'no_such_call', message: 'The call has ended' } })
    const error = await answer.catch((failure) => failure)
    expect(error).toBeInstanceOf(CtiCommandError)
    expect(error.code).toBe('no_such_call')
    expect(error.message).toBe('The call has ended')
  })

  it('fails a command whose reply does not come within 5 s, and ignores the late reply', async () => {
    const cti = client()
    cti.connect()
    const socket = FakeSocket.last()
    socket.accept()
    const hangup = cti.command('call.hangup', { call_id: 'c1' })
    const outcome = hangup.catch((failure) => failure)
    vi.advanceTimersByTime(4_999)
    await Promise.resolve()
    vi.advanceTimersByTime(1)
    const error = await outcome
    expect(error).toBeInstanceOf(CtiTimeoutError)
    socket.reply(socket.lastSent('call.hangup'))
    expect(cti.status).toBe('open') // a slow command is not a dead connection
  })

  it('refuses commands while disconnected and fails the pending ones when the connection drops', async () => {
    const cti = client()
    await expect(cti.command('agent.ready')).rejects.toBeInstanceOf(CtiDisconnectedError)
    cti.connect()
    const socket = FakeSocket.last()
    socket.accept()
    const pending = cti.command('agent.not_ready', { reason: 'lunch' }).catch((failure) => failure)
    socket.drop()
    expect(await pending).toBeInstanceOf(CtiDisconnectedError)
    await expect(cti.command('agent.ready')).rejects.toBeInstanceOf(CtiDisconnectedError)
  })

  it('stops for good when the server closes for a lost session, and tells listeners', () => {
    const cti = client()
    const types: string[] = []
    cti.on('*', (event) => types.push(event.type))
    cti.connect()
    FakeSocket.last().accept()
    FakeSocket.last().drop(4401, 'session expired')
    vi.advanceTimersByTime(60_000)
    expect(FakeSocket.all).toHaveLength(1)
    expect(cti.status).toBe('closed')
    expect(types).toContain('cti.unauthorized')
  })

  it('does not reconnect after close()', () => {
    const cti = client()
    cti.connect()
    FakeSocket.last().accept()
    cti.close()
    vi.advanceTimersByTime(60_000)
    expect(FakeSocket.all).toHaveLength(1)
    expect(cti.status).toBe('closed')
  })

  it('whenOpen waits for the hello reply, and times out when the server never answers', async () => {
    const cti = client()
    cti.connect()
    const opened = cti.whenOpen(3_000)
    FakeSocket.last().accept()
    await expect(opened).resolves.toBeUndefined()
    const other = client()
    other.connect()
    const never = other.whenOpen(3_000).catch((failure) => failure)
    vi.advanceTimersByTime(3_000)
    expect(await never).toBeInstanceOf(CtiTimeoutError)
  })

  it('a listener that throws does not stop the others', () => {
    const cti = client()
    const seen: string[] = []
    const warn = vi.spyOn(console, 'warn').mockImplementation(() => undefined)
    cti.on('message', () => {
      throw new Error('boom')
    })
    cti.on('message', (event) => seen.push(String(event.text)))
    cti.connect()
    FakeSocket.last().accept()
    FakeSocket.last().receive({ type: 'message', seq: 1, from: '班长', text: '注意排队' })
    expect(seen).toEqual(['注意排队'])
    warn.mockRestore()
  })
})
