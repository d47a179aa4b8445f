// The supervisor's live view (SUP-01, SUP-02, SUP-06, SUP-07): the wallboard snapshot from the CTI
// `wallboard` events, with GET /api/v1/live every 2 s whenever the events are not flowing.

import { defineStore } from 'pinia'
import { computed, ref, shallowRef } from 'vue'
import { api, pageItems } from '@/api/http'
import type { AgentState, ReasonCode, WallboardSnapshot } from '@/api/types'
import type { CtiClient, CtiStatus } from '@/cti/client'
import { sharedCti } from '@/cti/connection'
import { serverClock } from '@/utils/time'

export const POLL_INTERVAL_MS = 2_000
/** Events come every second while anything changes; after this long without one the data is checked. */
export const EVENT_SILENCE_MS = 10_000

export function emptySnapshot(): WallboardSnapshot {
  return { agents: [], queues: [], trunks: [] }
}

/** A snapshot with every list present, whatever the server left out. */
export function normalizeSnapshot(body: unknown): WallboardSnapshot {
  const record = (body && typeof body === 'object' ? body : {}) as Record<string, unknown>
  const source = (record.snapshot && typeof record.snapshot === 'object' ? record.snapshot : record) as Record<string, unknown>
  return {
    agents: Array.isArray(source.agents) ? (source.agents as WallboardSnapshot['agents']) : [],
    queues: Array.isArray(source.queues) ? (source.queues as WallboardSnapshot['queues']) : [],
    trunks: Array.isArray(source.trunks) ? (source.trunks as WallboardSnapshot['trunks']) : [],
  }
}

/** Whether the poll fallback should fetch now. */
export function shouldPoll(ctiStatus: CtiStatus, lastEventAt: number | null, now: number): boolean {
  if (ctiStatus !== 'open') return true
  return lastEventAt === null || now - lastEventAt > EVENT_SILENCE_MS
}

export function countByState(snapshot: WallboardSnapshot): Partial<Record<AgentState, number>> {
  const counts: Partial<Record<AgentState, number>> = {}
  for (const agent of snapshot.agents) counts[agent.state] = (counts[agent.state] ?? 0) + 1
  return counts
}

export const useWallboardStore = defineStore('wallboard', () => {
  const snapshot = shallowRef<WallboardSnapshot>(emptySnapshot())
  const updatedAt = ref<number | null>(null)
  const source = ref<'cti' | 'poll' | null>(null)
  const error = ref<string | null>(null)
  const ctiStatus = ref<CtiStatus>('idle')
  const reasonCodes = ref<ReasonCode[]>([])
  let lastEventAt: number | null = null
  let timer: ReturnType<typeof setInterval> | null = null
  let polling = false
  let cti: CtiClient | null = null
  const unsubscribers: Array<() => void> = []
  let users = 0

  const stateCounts = computed(() => countByState(snapshot.value))
  const totals = computed(() => {
    const queues = snapshot.value.queues
    const sum = (pick: (q: (typeof queues)[number]) => number) => queues.reduce((total, queue) => total + (pick(queue) || 0), 0)
    return {
      waiting: sum((q) => q.waiting),
      longestWait: queues.reduce((max, queue) => Math.max(max, queue.longest_wait_seconds || 0), 0),
      offered: sum((q) => q.offered_today),
      answered: sum((q) => q.answered_today),
      abandoned: sum((q) => q.abandoned_today),
    }
  })

  function accept(body: unknown, from: 'cti' | 'poll'): void {
    snapshot.value = normalizeSnapshot(body)
    updatedAt.value = Date.now()
    source.value = from
    error.value = null
  }

  async function poll(): Promise<void> {
    if (polling) return
    polling = true
    try {
      accept(await api.get('/live', { timeoutMs: 5_000 }), 'poll')
    } catch (failure) {
      error.value = failure instanceof Error ? failure.message : String(failure)
    } finally {
      polling = false
    }
  }

  /** Starts live updates (each page that shows the wallboard calls this; the last stop() ends them). */
  function start(): void {
    users += 1
    if (users > 1) return
    cti = sharedCti()
    unsubscribers.push(
      cti.on('wallboard', (event) => {
        lastEventAt = Date.now()
        accept(event, 'cti')
      }),
      cti.onStatus((status) => (ctiStatus.value = status)),
    )
    ctiStatus.value = cti.status
    cti.connect()
    void poll()
    void api
      .get('/reason-codes', { query: { limit: 200 } })
      .then((body) => (reasonCodes.value = pageItems<ReasonCode>(body).items))
      .catch(() => undefined)
    timer = setInterval(() => {
      if (shouldPoll(ctiStatus.value, lastEventAt, Date.now())) void poll()
    }, POLL_INTERVAL_MS)
  }

  function stop(): void {
    users = Math.max(0, users - 1)
    if (users > 0) return
    for (const unsubscribe of unsubscribers.splice(0)) unsubscribe()
    if (timer !== null) clearInterval(timer)
    timer = null
    cti = null
  }

  /** 强制示闲 / 示忙 / 签出 (SUP-05); the server audits it. */
  async function forceState(agentId: string, state: 'ready' | 'not_ready' | 'logged_out'): Promise<void> {
    const client = cti ?? sharedCti()
    await client.command('supervisor.force_state', { agent_id: agentId, state })
  }

  /** Server time now, for timers against `since` fields. */
  const now = () => serverClock.now()

  return { snapshot, updatedAt, source, error, ctiStatus, reasonCodes, stateCounts, totals, start, stop, poll, forceState, now }
})
