// The agent desktop (坐席工作台): the CTI connection, the browser media channel, the softphone state, the
// agent's figures, queue counts (ACD-12) and messages (AGT-12). Commands go to the server; the state
// shown follows the server's events only (FM-05).

import { defineStore } from 'pinia'
import { computed, reactive, ref, shallowRef, watch } from 'vue'
import { api, pageItems } from '@/api/http'
import type { ReasonCode } from '@/api/types'
import { type CtiClient, CtiCommandError, type CtiEvent, type CtiReply, type CtiStatus } from '@/cti/client'
import { sharedCti } from '@/cti/connection'
import { MediaChannel, type MediaChannelState, MediaError } from '@/softphone/media'
import {
  type Figures,
  initialFigures,
  initialPhone,
  type PhoneState,
  reducePhone,
  restorePhone,
  setMuted,
  updateFigures,
} from '@/softphone/phone'
import { Ringer } from '@/softphone/ringer'
import { type CdrRow, figuresFromAcd, startOfToday, type TodayFigures, todayFigures } from '@/softphone/today'
import { serverClock } from '@/utils/time'

export type DeviceKind = 'browser' | 'extension' | 'external'

export interface AgentMessage {
  from: string
  text: string
  at: number
  read: boolean
}

const DEVICE_KEY = 'hotline.agent.device'
const PHONE_EVENT_TYPES = new Set(['agent.state', 'call.offered', 'call.answered', 'call.held', 'call.resumed', 'call.ended'])
const MAX_MESSAGES = 100
const MAX_MEDIA_RETRIES = 3

/** `{queue: waiting}` from a `queue.counts` event, whether the counts are nested or at the top level. */
export function parseQueueCounts(event: Record<string, unknown>): Record<string, number> {
  const source =
    event.counts && typeof event.counts === 'object'
      ? (event.counts as Record<string, unknown>)
      : event.queues && typeof event.queues === 'object' && !Array.isArray(event.queues)
        ? (event.queues as Record<string, unknown>)
        : event
  const counts: Record<string, number> = {}
  for (const [key, value] of Object.entries(source)) {
    if (key === 'type' || key === 'seq' || key === 'at') continue
    if (typeof value === 'number' && Number.isFinite(value)) counts[key] = value
    else if (value && typeof value === 'object' && typeof (value as { waiting?: unknown }).waiting === 'number') {
      counts[key] = (value as { waiting: number }).waiting
    }
  }
  return counts
}

/** The `device` field of `agent.login` for a choice in the UI. */
export function deviceAddress(kind: DeviceKind, number: string): string {
  if (kind === 'browser') return 'browser'
  const cleaned = number.trim()
  return kind === 'extension' ? `extension:${cleaned}` : `external:${cleaned.replace(/[\s-]/g, '')}`
}

function loadDevice(): { kind: DeviceKind; number: string } {
  try {
    const saved = JSON.parse(localStorage.getItem(DEVICE_KEY) ?? 'null')
    if (saved && ['browser', 'extension', 'external'].includes(saved.kind)) {
      return { kind: saved.kind, number: String(saved.number ?? '') }
    }
  } catch {
    // ignore a broken saved choice
  }
  return { kind: 'browser', number: '' }
}

export const useAgentStore = defineStore('agent', () => {
  const ctiStatus = ref<CtiStatus>('idle')
  const mediaState = ref<MediaChannelState>('idle')
  const mediaError = ref<MediaError | null>(null)
  const remoteStream = shallowRef<MediaStream | null>(null)
  const phone = ref<PhoneState>(initialPhone(serverClock.now()))
  const figures = ref<Figures>(initialFigures(serverClock.now()))
  const today = ref<TodayFigures | null>(null)
  const queueCounts = ref<Record<string, number>>({})
  const messages = ref<AgentMessage[]>([])
  const reasonCodes = ref<ReasonCode[]>([])
  const device = reactive(loadDevice())
  const activeDevice = ref<string | null>(null)
  const pending = reactive<Record<string, boolean>>({})
  const agentId = ref<string | null>(null)

  let cti: CtiClient | null = null
  let media: MediaChannel | null = null
  const ringer = new Ringer()
  const unsubscribers: Array<() => void> = []
  let todayTimer: ReturnType<typeof setInterval> | null = null

  const notReadyReasons = computed(() => reasonCodes.value.filter((code) => (code.kind ?? 'not_ready') === 'not_ready'))
  const dispositions = computed(() => reasonCodes.value.filter((code) => code.kind === 'disposition'))
  const loggedIn = computed(() => phone.value.agentState !== 'logged_out')
  const waitingTotal = computed(() => Object.values(queueCounts.value).reduce((sum, value) => sum + value, 0))
  const unread = computed(() => messages.value.filter((message) => !message.read).length)

  watch(
    () => phone.value.call?.phase === 'ringing',
    (ringing) => (ringing ? ringer.start() : ringer.stop()),
  )

  // A voice channel that fails mid-session (network change, server restart) is set up again by itself,
  // a few times, a little later each time; then the agent has the button (FM-16: never silently dead).
  let mediaRetries = 0
  let mediaRetryTimer: ReturnType<typeof setTimeout> | null = null
  watch(mediaState, (state) => {
    if (state === 'connected') mediaRetries = 0
    if (state !== 'failed' || mediaRetryTimer !== null || mediaRetries >= MAX_MEDIA_RETRIES) return
    if (!loggedIn.value || activeDevice.value !== 'browser' || mediaError.value?.code === 'microphone_denied') return
    mediaRetries += 1
    mediaRetryTimer = setTimeout(() => {
      mediaRetryTimer = null
      if (loggedIn.value && activeDevice.value === 'browser' && ctiStatus.value === 'open') void startMedia().catch(() => undefined)
    }, 2000 * mediaRetries)
  }, { flush: 'sync' }) // every transition counts, also two within one tick

  function apply(event: CtiEvent): void {
    const now = serverClock.now()
    if (PHONE_EVENT_TYPES.has(event.type)) {
      if (event.type === 'agent.state' && agentId.value && event.agent_id && String(event.agent_id) !== agentId.value) return
      const before = phone.value
      const after = reducePhone(before, event, now)
      if (after !== before) {
        figures.value = updateFigures(figures.value, before, after, now)
        phone.value = after
        if (before.wrapUp && !after.wrapUp) void refreshToday()
      }
      if (event.type === 'agent.state' && event.state === 'logged_out') {
        activeDevice.value = null
        stopMedia()
      }
      return
    }
    if (event.type === 'queue.counts') {
      queueCounts.value = parseQueueCounts(event)
    } else if (event.type === 'message') {
      messages.value = [
        { from: String(event.from ?? ''), text: String(event.text ?? ''), at: Date.parse(String(event.at ?? '')) || Date.now(), read: false },
        ...messages.value,
      ].slice(0, MAX_MESSAGES)
    }
  }

  function onHello(reply: CtiReply): void {
    const now = serverClock.now()
    const before = phone.value
    const after = restorePhone(before, reply, now)
    figures.value = updateFigures(figures.value, before, after, now)
    phone.value = after
    const agent = (reply.agent && typeof reply.agent === 'object' ? reply.agent : reply) as Record<string, unknown>
    if (typeof agent.device === 'string') activeDevice.value = agent.device
    // Today's figures as the ACD counts them, until the CDRs (refreshed after each call) say more.
    const acdFigures = figuresFromAcd(agent.figures)
    if (acdFigures && (!today.value || today.value.answered <= acdFigures.answered)) today.value = acdFigures
    const counts = reply.queue_counts ?? (agent as Record<string, unknown>).queue_counts
    if (counts && typeof counts === 'object') queueCounts.value = parseQueueCounts({ counts })
    // After a reload the server still bridges calls to this agent's browser: bring the channel back.
    const onBrowser = (activeDevice.value ?? (device.kind === 'browser' ? 'browser' : '')) === 'browser'
    if (after.agentState !== 'logged_out' && onBrowser && (!media || mediaState.value === 'failed' || mediaState.value === 'closed' || mediaState.value === 'idle')) {
      void startMedia().catch(() => undefined)
    }
  }

  /** Opens the CTI connection (page mount); idempotent. */
  function connect(forAgent: string | null): void {
    agentId.value = forAgent
    if (cti) return
    cti = sharedCti()
    unsubscribers.push(
      cti.onStatus((status) => (ctiStatus.value = status)),
      cti.onHello(onHello),
      cti.on('*', apply),
    )
    ctiStatus.value = cti.status
    cti.connect()
    void loadReasonCodes()
    void refreshToday()
    todayTimer = setInterval(() => void refreshToday(), 60_000)
  }

  /** Leaves the page: stops listening (the connection stays for the tab; media stays while logged in). */
  function disconnect(): void {
    for (const unsubscribe of unsubscribers.splice(0)) unsubscribe()
    if (todayTimer !== null) clearInterval(todayTimer)
    todayTimer = null
    ringer.stop()
    cti = null
  }

  async function loadReasonCodes(): Promise<void> {
    try {
      reasonCodes.value = pageItems<ReasonCode>(await api.get('/reason-codes', { query: { limit: 200 } })).items
    } catch {
      reasonCodes.value = []
    }
  }

  async function refreshToday(): Promise<void> {
    if (!agentId.value) return
    try {
      const body = await api.get<unknown>('/cdrs', { query: { from: startOfToday(), to: new Date().toISOString(), limit: 1000 } })
      const fromCdrs = todayFigures(pageItems<CdrRow>(body).items, agentId.value)
      // The CDRs trail the ACD by a moment after each call: the fuller count wins.
      if (!today.value || fromCdrs.answered >= today.value.answered) today.value = fromCdrs
    } catch {
      // not permitted or not available: the ACD's or the session's own figures remain
    }
  }

  async function command(op: string, fields: Record<string, unknown> = {}): Promise<CtiReply> {
    if (!cti) throw new Error('not connected')
    pending[op] = true
    try {
      return await cti.command(op, fields)
    } finally {
      pending[op] = false
    }
  }

  async function startMedia(): Promise<void> {
    if (!cti) throw new Error('not connected')
    const client = cti
    if (!media) {
      media = new MediaChannel()
      media.onState((state) => (mediaState.value = state))
      media.onRemoteStream((stream) => (remoteStream.value = stream))
    }
    mediaError.value = null
    try {
      await media.start(async (sdp) => {
        const reply = await client.command('webrtc.offer', { sdp })
        if (typeof reply.sdp !== 'string' || !reply.sdp) throw new MediaError('negotiation_failed', 'The server sent no answer SDP')
        return reply.sdp
      })
    } catch (error) {
      mediaError.value = error instanceof MediaError ? error : new MediaError('negotiation_failed', String(error))
      throw mediaError.value
    }
  }

  function stopMedia(): void {
    media?.stop()
    media = null
    mediaState.value = 'idle'
    remoteStream.value = null
  }

  // --- the agent's commands -----------------------------------------------------------------------

  async function signIn(): Promise<void> {
    ringer.unlock()
    const address = deviceAddress(device.kind, device.number)
    localStorage.setItem(DEVICE_KEY, JSON.stringify({ kind: device.kind, number: device.number }))
    if (!cti) throw new Error('not connected')
    await cti.whenOpen()
    // The media channel comes first: an offer may follow the login at once.
    if (device.kind === 'browser') await startMedia()
    else stopMedia()
    await command('agent.login', { device: address })
    activeDevice.value = address
    figures.value = initialFigures(serverClock.now())
  }

  async function signOut(): Promise<void> {
    await command('agent.logout')
    stopMedia()
    activeDevice.value = null
  }

  const ready = () => command('agent.ready')
  const notReady = (reason?: string) => command('agent.not_ready', reason ? { reason } : {})

  function currentCallId(): string {
    const call = phone.value.call
    if (!call) throw new Error('no call')
    return call.callId
  }

  async function answer(): Promise<void> {
    ringer.stop()
    await command('call.answer', { call_id: currentCallId() })
  }
  const reject = () => command('call.reject', { call_id: currentCallId() })
  const hangup = () => command('call.hangup', { call_id: currentCallId() })
  const hold = () => command('call.hold', { call_id: currentCallId() })
  const resume = () => command('call.resume', { call_id: currentCallId() })

  async function toggleMute(): Promise<void> {
    const call = phone.value.call
    if (!call) return
    const muted = !call.muted
    // Local first: the microphone is silent the moment the button is pressed, whatever the network does.
    media?.setMuted(muted)
    phone.value = setMuted(phone.value, call.callId, muted)
    try {
      await command(muted ? 'call.mute' : 'call.unmute', { call_id: call.callId })
    } catch (error) {
      // A server without mute on its side: the microphone's own mute is the mute.
      if (error instanceof CtiCommandError && error.code === 'not_supported') return
      // The server did not take it: the local mute still holds, so the button keeps telling the truth about
      // the microphone; unmute locally only when asked to unmute.
      if (!muted) {
        media?.setMuted(true)
        phone.value = setMuted(phone.value, call.callId, true)
      }
      throw error
    }
  }

  const dtmf = (digits: string) => command('call.dtmf', { call_id: currentCallId(), digits })
  const transfer = (target: string, mode: 'blind' | 'attended') => command('call.transfer', { call_id: currentCallId(), target, mode })

  async function endWrapUp(disposition: string | null, notes: string): Promise<void> {
    const fields: Record<string, unknown> = {}
    if (disposition) fields.disposition = disposition
    if (notes.trim()) fields.notes = notes.trim()
    await command('wrapup.end', fields)
  }

  function markMessagesRead(): void {
    messages.value = messages.value.map((message) => ({ ...message, read: true }))
  }

  return {
    ctiStatus,
    mediaState,
    mediaError,
    remoteStream,
    phone,
    figures,
    today,
    queueCounts,
    waitingTotal,
    messages,
    unread,
    reasonCodes,
    notReadyReasons,
    dispositions,
    device,
    activeDevice,
    pending,
    loggedIn,
    connect,
    disconnect,
    startMedia,
    signIn,
    signOut,
    ready,
    notReady,
    answer,
    reject,
    hangup,
    hold,
    resume,
    toggleMute,
    dtmf,
    transfer,
    endWrapUp,
    markMessagesRead,
    apply,
  }
})
