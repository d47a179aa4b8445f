import { createPinia, setActivePinia } from 'pinia'
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest'
import { CtiClient } from '@/cti/client'
import { FakeSocket, fakeFactory } from './fakeSocket'

// The store's CTI connection and media channel, replaced by the fake socket and a fake channel that
// negotiates with whatever the test's "server" answers.
let client: CtiClient
vi.mock('@/cti/connection', () => ({
  sharedCti: () => client,
  closeSharedCti: () => client.close(),
}))
const mediaLog: string[] = []
const channels: Array<{ fail: () => void }> = []
let failStarts = false
vi.mock('@/softphone/media', async (importOriginal) => {
  const original = await importOriginal<typeof import('@/softphone/media')>()
  class FakeMediaChannel {
    state = 'idle'
    private listeners: Array<(state: string) => void> = []
    constructor() {
      channels.push(this)
    }
    fail() {
      this.state = 'failed'
      for (const listener of this.listeners) listener('failed')
    }
    onState(listener: (state: string) => void) {
      this.listeners.push(listener)
      return () => undefined
    }
    onRemoteStream() {
      return () => undefined
    }
    async start(exchange: (sdp: string) => Promise<string>) {
      mediaLog.push('start')
      for (const listener of this.listeners) listener('starting')
      if (failStarts) {
        this.fail()
        throw new original.MediaError('negotiation_failed', 'no route')
      }
      const answer = await exchange('v=0 browser-offer')
      mediaLog.push(`answer:${answer}`)
      this.state = 'connected'
      for (const listener of this.listeners) listener('connected')
    }
    setMuted(muted: boolean) {
      mediaLog.push(`muted:${muted}`)
    }
    stop() {
      mediaLog.push('stop')
    }
  }
  return { ...original, MediaChannel: FakeMediaChannel }
})

const { useAgentStore, parseQueueCounts, deviceAddress } = await import('@/stores/agent')

/** Plays the server: answers every command as docs/cti.md says, recording the ops in order. */
function autoServer(socket: FakeSocket, refuse: Record<string, string> = {}) {
  const ops: Array<Record<string, unknown>> = []
  const originalSend = socket.send.bind(socket)
  socket.send = (data: string) => {
    originalSend(data)
    const message = JSON.parse(data)
    ops.push(message)
    queueMicrotask(() => {
      if (message.op === 'hello') return
      if (refuse[message.op]) socket.receive({ reply_to: message.id, ok: false, error: { code: 'refused', message: refuse[message.op] } })
      else if (message.op === 'webrtc.offer') socket.reply(message, { sdp: 'v=0 server-answer' })
      else socket.reply(message)
    })
  }
  return ops
}

const flush = async () => {
  for (let i = 0; i < 20; i++) await Promise.resolve()
}

describe('the agent desktop store', () => {
  beforeEach(() => {
    setActivePinia(createPinia())
    FakeSocket.reset()
    mediaLog.length = 0
    localStorage.clear()
    client = new CtiClient({ url: 'ws://test/api/v1/cti', socketFactory: fakeFactory, random: () => 0.5 })
    vi.stubGlobal('fetch', vi.fn(async () => new Response(JSON.stringify({ items: [], total: 0 }), { status: 200 })))
  })
  afterEach(() => {
    vi.unstubAllGlobals()
  })

  it('signs in on the browser: media channel first (offer, answer), then agent.login', async () => {
    const agent = useAgentStore()
    agent.connect('8001')
    const socket = FakeSocket.last()
    const ops = autoServer(socket)
    socket.accept({ agent: { state: 'logged_out' }, calls: [] })
    await agent.signIn()
    expect(ops.map((op) => op.op)).toEqual(['hello', 'webrtc.offer', 'agent.login'])
    expect(ops[1].sdp).toBe('v=0 browser-offer')
    expect(ops[2].device).toBe('browser')
    expect(mediaLog).toEqual(['start', 'answer:v=0 server-answer'])
    expect(agent.mediaState).toBe('connected')
    expect(JSON.parse(localStorage.getItem('hotline.agent.device')!)).toEqual({ kind: 'browser', number: '' })
  })

  it('signs in on an extension without a media channel', async () => {
    const agent = useAgentStore()
    agent.device.kind = 'extension'
    agent.device.number = ' 1003 '
    agent.connect('8001')
    const socket = FakeSocket.last()
    const ops = autoServer(socket)
    socket.accept()
    await agent.signIn()
    expect(ops.map((op) => op.op)).toEqual(['hello', 'agent.login'])
    expect(ops[1].device).toBe('extension:1003')
    expect(mediaLog).not.toContain('start')
  })

  it('follows the server: state, offer, answer, end, wrap-up; the figures count the call', async () => {
    const agent = useAgentStore()
    agent.connect('8001')
    const socket = FakeSocket.last()
    autoServer(socket)
    socket.accept()
    const now = new Date().toISOString()
    socket.receive({ type: 'agent.state', seq: 1, at: now, agent_id: '8001', state: 'ready', since: now })
    socket.receive({ type: 'agent.state', seq: 2, at: now, agent_id: '8002', state: 'on_call', since: now }) // someone else
    expect(agent.phone.agentState).toBe('ready')
    socket.receive({ type: 'call.offered', seq: 3, at: now, call_id: 'c1', ani_masked: '138****5678', queue: 'sales', data: {} })
    expect(agent.phone.call?.phase).toBe('ringing')
    await agent.answer()
    socket.receive({ type: 'call.answered', seq: 4, at: now, call_id: 'c1' })
    expect(agent.phone.call?.phase).toBe('connected')
    socket.receive({ type: 'call.ended', seq: 5, at: now, call_id: 'c1', cause: 'remote' })
    socket.receive({ type: 'agent.state', seq: 6, at: now, agent_id: '8001', state: 'wrap_up', since: now, call_id: 'c1' })
    expect(agent.phone.wrapUp?.call.callId).toBe('c1')
    expect(agent.figures).toMatchObject({ offered: 1, answered: 1 })
    socket.receive({ type: 'queue.counts', seq: 7, at: now, counts: { sales: 3, support: 1 } })
    expect(agent.waitingTotal).toBe(4)
    socket.receive({ type: 'message', seq: 8, at: now, from: '班长', text: '请示闲' })
    expect(agent.unread).toBe(1)
    agent.markMessagesRead()
    expect(agent.unread).toBe(0)
  })

  it('sends the wrap-up disposition and notes, trimmed, and leaves empty ones out', async () => {
    const agent = useAgentStore()
    agent.connect('8001')
    const socket = FakeSocket.last()
    const ops = autoServer(socket)
    socket.accept()
    await agent.endWrapUp('resolved', '  已解决  ')
    await agent.endWrapUp(null, '   ')
    const ends = ops.filter((op) => op.op === 'wrapup.end')
    expect(ends[0]).toMatchObject({ disposition: 'resolved', notes: '已解决' })
    expect(ends[1]).not.toHaveProperty('disposition')
    expect(ends[1]).not.toHaveProperty('notes')
  })

  it('mutes the microphone at once and keeps it muted when the server refuses', async () => {
    const agent = useAgentStore()
    agent.connect('8001')
    const socket = FakeSocket.last()
    autoServer(socket, { 'call.mute': 'no such call' })
    socket.accept()
    await agent.signIn()
    const now = new Date().toISOString()
    socket.receive({ type: 'call.offered', seq: 1, at: now, call_id: 'c1' })
    socket.receive({ type: 'call.answered', seq: 2, at: now, call_id: 'c1' })
    await expect(agent.toggleMute()).rejects.toThrow('no such call')
    expect(agent.phone.call?.muted).toBe(true)
    expect(mediaLog).toContain('muted:true')
  })

  it('after a reload, restores a logged-in agent and brings the media channel back', async () => {
    const agent = useAgentStore()
    agent.connect('8001')
    const socket = FakeSocket.last()
    const ops = autoServer(socket)
    const since = new Date(Date.now() - 60_000).toISOString()
    socket.accept({ agent: { agent_id: '8001', state: 'on_call', since, device: 'browser' }, calls: [{ call_id: 'c5', state: 'connected', ani_masked: '139****1111' }] })
    await flush()
    expect(agent.phone.agentState).toBe('on_call')
    expect(agent.phone.call).toMatchObject({ callId: 'c5', phase: 'connected' })
    expect(ops.map((op) => op.op)).toContain('webrtc.offer')
    expect(agent.activeDevice).toBe('browser')
  })

  it('sets a failed voice channel up again by itself, a bounded number of times', async () => {
    vi.useFakeTimers()
    try {
      const agent = useAgentStore()
      agent.connect('8001')
      const socket = FakeSocket.last()
      const ops = autoServer(socket)
      socket.accept()
      await agent.signIn()
      const offers = () => ops.filter((op) => op.op === 'webrtc.offer').length
      expect(offers()).toBe(1)
      const now = new Date().toISOString()
      socket.receive({ type: 'agent.state', seq: 1, at: now, agent_id: '8001', state: 'ready', since: now })
      // A channel that comes back resets the count: each later failure is retried again.
      channels[channels.length - 1].fail()
      await vi.advanceTimersByTimeAsync(2000)
      expect(offers()).toBe(2)
      // One that keeps failing is retried three times, then it is up to the agent's button.
      failStarts = true
      channels[channels.length - 1].fail()
      await vi.advanceTimersByTimeAsync(60_000)
      expect(offers()).toBe(2)
      expect(mediaLog.filter((entry) => entry === 'start')).toHaveLength(2 + 3)
      expect(agent.mediaState).toBe('failed')
    } finally {
      failStarts = false
      vi.useRealTimers()
    }
  })

  it("takes mute as done when the server has no mute of its own (the microphone's is enough)", async () => {
    const agent = useAgentStore()
    agent.connect('8001')
    const socket = FakeSocket.last()
    const ops = autoServer(socket)
    socket.accept()
    await agent.signIn()
    const now = new Date().toISOString()
    socket.receive({ type: 'call.offered', seq: 1, at: now, call_id: 'c1' })
    socket.receive({ type: 'call.answered', seq: 2, at: now, call_id: 'c1' })
    socket.send = ((original) => (data: string) => {
      original(data)
      const message = JSON.parse(data)
      queueMicrotask(() => socket.receive({ reply_to: message.id, ok: false, error: { code: 'not_supported', message: 'call.mute is not supported by this server yet' } }))
    })(socket.send.bind(socket))
    await expect(agent.toggleMute()).resolves.toBeUndefined()
    expect(agent.phone.call?.muted).toBe(true)
    expect(ops.some((op) => op.op === 'call.mute')).toBe(true)
  })

  it("shows today's figures from the ACD after hello", async () => {
    const agent = useAgentStore()
    agent.connect('8001')
    const socket = FakeSocket.last()
    autoServer(socket)
    socket.accept({ agent: { agent_id: '8001', state: 'not_ready', figures: { offers: 9, offers_answered: 8, calls_handled: 8, talk_seconds: 960, wrap_up_seconds: 80, average_talk_seconds: 120, average_wrap_up_seconds: 10 } }, calls: [] })
    await flush()
    expect(agent.today).toEqual({ answered: 8, talkSeconds: 960, wrapUpSeconds: 80, averageTalkSeconds: 120, averageWrapUpSeconds: 10 })
  })

  it('reads queue counts nested or flat, and builds device addresses', () => {
    expect(parseQueueCounts({ type: 'queue.counts', seq: 4, counts: { sales: 2 } })).toEqual({ sales: 2 })
    expect(parseQueueCounts({ type: 'queue.counts', seq: 4, at: 'x', sales: 2, support: 0 })).toEqual({ sales: 2, support: 0 })
    expect(parseQueueCounts({ type: 'queue.counts', queues: { vip: { waiting: 5 } } })).toEqual({ vip: 5 })
    expect(deviceAddress('browser', '1001')).toBe('browser')
    expect(deviceAddress('extension', ' 1001 ')).toBe('extension:1001')
    expect(deviceAddress('external', '138 0000-0000')).toBe('external:13800000000')
  })
})
