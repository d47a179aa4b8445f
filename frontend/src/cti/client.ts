// The CTI WebSocket client (docs/cti.md): commands with ids and bounded replies (FM-05), heartbeats,
// and reconnection that resumes the event stream from the last sequence number seen (AGT-13).
//
//   const cti = new CtiClient({ url: ctiUrl() })
//   cti.on('call.offered', (event) => ...)
//   cti.onHello((reply) => ...)            // after every (re)connect: the server's view of the agent
//   cti.connect()
//   await cti.command('agent.ready')       // rejects with CtiCommandError / CtiTimeoutError / CtiDisconnectedError

export interface CtiSocket {
  readonly readyState: number
  send(data: string): void
  close(code?: number, reason?: string): void
  onopen: ((event: unknown) => void) | null
  onmessage: ((event: { data: unknown }) => void) | null
  onclose: ((event: { code: number; reason: string }) => void) | null
  onerror: ((event: unknown) => void) | null
}

export type SocketFactory = (url: string) => CtiSocket

export interface CtiEvent {
  type: string
  seq?: number
  at?: string
  [field: string]: unknown
}

export interface CtiReply {
  reply_to: string
  ok: boolean
  error?: { code: string; message: string }
  [field: string]: unknown
}

export type CtiStatus = 'idle' | 'connecting' | 'open' | 'reconnecting' | 'closed'

export class CtiError extends Error {
  readonly code: string
  constructor(code: string, message: string) {
    super(message)
    this.name = 'CtiError'
    this.code = code
  }
}
/** The server refused the command (`ok: false`). */
export class CtiCommandError extends CtiError {}
/** No reply within the reply timeout; the command's outcome is unknown (the server owns the state). */
export class CtiTimeoutError extends CtiError {}
/** The connection is down (or went down before the reply came). */
export class CtiDisconnectedError extends CtiError {}

export interface CtiOptions {
  url: string
  socketFactory?: SocketFactory
  heartbeatMs?: number
  replyTimeoutMs?: number
  reconnectMinMs?: number
  reconnectMaxMs?: number
  /** 0..1, for reconnect jitter; injectable so tests are deterministic. */
  random?: () => number
  /** Close codes after which reconnecting is pointless (the session is gone). */
  fatalCloseCodes?: number[]
}

const OPEN = 1
/** Frames that restate the current picture rather than record a change. */
const SNAPSHOT_TYPES = new Set(['wallboard', 'queue.counts'])
/** Recent event keys kept to recognise repeats (a replay never reaches further back than this). */
const SEEN_LIMIT = 2000
const DEFAULTS = {
  heartbeatMs: 10_000,
  replyTimeoutMs: 5_000,
  reconnectMinMs: 500,
  reconnectMaxMs: 10_000,
  fatalCloseCodes: [1008, 4001, 4401, 4403],
}

interface Pending {
  op: string
  resolve: (reply: CtiReply) => void
  reject: (error: Error) => void
  timer: ReturnType<typeof setTimeout>
}

type Listener<T> = (value: T) => void

export function ctiUrl(location: { protocol: string; host: string } = window.location): string {
  const scheme = location.protocol === 'https:' ? 'wss' : 'ws'
  return `${scheme}://${location.host}/api/v1/cti`
}

export class CtiClient {
  status: CtiStatus = 'idle'
  /** The highest event sequence number received; sent with `hello` on reconnect. */
  lastSeq: number | null = null
  /** How many reconnect attempts in a row have failed (0 while connected). */
  attempts = 0

  private readonly options: Required<Omit<CtiOptions, 'socketFactory' | 'random' | 'fatalCloseCodes'>> & {
    socketFactory: SocketFactory
    random: () => number
    fatalCloseCodes: number[]
  }
  private socket: CtiSocket | null = null
  private nextId = 1
  private pending = new Map<string, Pending>()
  private heartbeat: ReturnType<typeof setInterval> | null = null
  private reconnectTimer: ReturnType<typeof setTimeout> | null = null
  private listeners = new Map<string, Set<Listener<CtiEvent>>>()
  private statusListeners = new Set<Listener<CtiStatus>>()
  private helloListeners = new Set<Listener<CtiReply>>()
  private openWaiters: Array<{ resolve: () => void; reject: (error: Error) => void }> = []
  private seen = new Set<string>()
  private wanted = false

  constructor(options: CtiOptions) {
    this.options = {
      url: options.url,
      socketFactory: options.socketFactory ?? ((url) => new WebSocket(url) as unknown as CtiSocket),
      heartbeatMs: options.heartbeatMs ?? DEFAULTS.heartbeatMs,
      replyTimeoutMs: options.replyTimeoutMs ?? DEFAULTS.replyTimeoutMs,
      reconnectMinMs: options.reconnectMinMs ?? DEFAULTS.reconnectMinMs,
      reconnectMaxMs: options.reconnectMaxMs ?? DEFAULTS.reconnectMaxMs,
      random: options.random ?? Math.random,
      fatalCloseCodes: options.fatalCloseCodes ?? DEFAULTS.fatalCloseCodes,
    }
  }

  // --- subscriptions ------------------------------------------------------------------------------

  /** Events of one type, or '*' for all. Returns the unsubscribe function. */
  on(type: string, listener: Listener<CtiEvent>): () => void {
    let set = this.listeners.get(type)
    if (!set) {
      set = new Set()
      this.listeners.set(type, set)
    }
    set.add(listener)
    return () => set!.delete(listener)
  }

  onStatus(listener: Listener<CtiStatus>): () => void {
    this.statusListeners.add(listener)
    return () => this.statusListeners.delete(listener)
  }

  /** The `hello` reply after every (re)connection: the server's state of this user. */
  onHello(listener: Listener<CtiReply>): () => void {
    this.helloListeners.add(listener)
    return () => this.helloListeners.delete(listener)
  }

  // --- connection ---------------------------------------------------------------------------------

  connect(): void {
    this.wanted = true
    if (this.socket) return
    this.clearReconnect()
    this.openSocket()
  }

  /** Closes for good (sign-out): no reconnect; pending commands fail. */
  close(): void {
    this.wanted = false
    this.clearReconnect()
    this.stopHeartbeat()
    const socket = this.socket
    this.socket = null
    if (socket) {
      this.detach(socket)
      try {
        socket.close(1000, 'client closing')
      } catch {
        // already closed
      }
    }
    this.failPending(new CtiDisconnectedError('closed', 'The connection was closed'))
    this.failOpenWaiters(new CtiDisconnectedError('closed', 'The connection was closed'))
    this.setStatus('closed')
  }

  /** Resolves once the connection is open and `hello` answered (rejects after `timeoutMs`). */
  whenOpen(timeoutMs = 15_000): Promise<void> {
    if (this.status === 'open') return Promise.resolve()
    return new Promise((resolve, reject) => {
      const waiter = {
        resolve: () => {
          clearTimeout(timer)
          resolve()
        },
        reject: (error: Error) => {
          clearTimeout(timer)
          reject(error)
        },
      }
      const timer = setTimeout(() => {
        this.openWaiters = this.openWaiters.filter((item) => item !== waiter)
        reject(new CtiTimeoutError('timeout', 'Could not connect to the server in time'))
      }, timeoutMs)
      this.openWaiters.push(waiter)
    })
  }

  // --- commands -----------------------------------------------------------------------------------

  /** Sends a command and resolves with its reply; rejects when the server refuses it, no reply comes
   * within the reply timeout, or the connection is not open. */
  command(op: string, fields: Record<string, unknown> = {}): Promise<CtiReply> {
    if (this.status !== 'open' || !this.socket) {
      return Promise.reject(new CtiDisconnectedError('not_connected', 'Not connected to the server'))
    }
    return this.send(op, fields)
  }

  private send(op: string, fields: Record<string, unknown>): Promise<CtiReply> {
    return new Promise<CtiReply>((resolve, reject) => this.request(op, fields, resolve, reject))
  }

  /** Sends one command; exactly one of the callbacks runs, synchronously when the reply arrives. */
  private request(
    op: string,
    fields: Record<string, unknown>,
    resolve: (reply: CtiReply) => void,
    reject: (error: Error) => void,
  ): void {
    const socket = this.socket
    if (!socket || socket.readyState !== OPEN) {
      reject(new CtiDisconnectedError('not_connected', 'Not connected to the server'))
      return
    }
    const id = String(this.nextId++)
    const timer = setTimeout(() => {
      if (!this.pending.delete(id)) return
      reject(new CtiTimeoutError('timeout', `No reply to ${op} within ${this.options.replyTimeoutMs / 1000} s`))
      // An unanswered ping or hello means the link is dead, whatever the socket thinks.
      if ((op === 'ping' || op === 'hello') && this.socket === socket) this.dropConnection(socket)
    }, this.options.replyTimeoutMs)
    this.pending.set(id, { op, resolve, reject, timer })
    try {
      socket.send(JSON.stringify({ ...fields, op, id }))
    } catch (error) {
      clearTimeout(timer)
      this.pending.delete(id)
      reject(new CtiDisconnectedError('send_failed', error instanceof Error ? error.message : 'Send failed'))
    }
  }

  // --- internals ----------------------------------------------------------------------------------

  private openSocket(): void {
    this.setStatus(this.attempts > 0 ? 'reconnecting' : 'connecting')
    let socket: CtiSocket
    try {
      socket = this.options.socketFactory(this.options.url)
    } catch {
      this.scheduleReconnect()
      return
    }
    this.socket = socket
    socket.onopen = () => {
      if (this.socket !== socket) return
      const hello: Record<string, unknown> = {}
      if (this.lastSeq !== null) hello.last_seq = this.lastSeq
      this.request(
        'hello',
        hello,
        (reply) => {
          if (this.socket !== socket) return
          // The log's head: resuming from it after a reconnect replays what was missed, even when no
          // event came before the link dropped. A head below ours means the server's log started anew.
          if (typeof reply.last_seq === 'number' && (this.lastSeq === null || reply.last_seq < this.lastSeq)) {
            this.lastSeq = reply.last_seq
            this.seen.clear()
          }
          this.attempts = 0
          this.setStatus('open')
          this.startHeartbeat(socket)
          for (const listener of this.helloListeners) listener(reply)
          for (const waiter of this.openWaiters.splice(0)) waiter.resolve()
        },
        (error) => {
          if (error instanceof CtiCommandError && this.socket === socket) {
            // A refused hello means this session may not use CTI: stop rather than loop.
            this.wanted = false
            this.dropConnection(socket)
            this.setStatus('closed')
            this.failOpenWaiters(error)
          }
          // Otherwise (timeout, connection lost) the timeout or close handler takes it from here.
        },
      )
    }
    socket.onmessage = (message) => {
      if (this.socket === socket) this.handleMessage(message.data)
    }
    socket.onerror = () => {
      // A close event always follows; reconnection is handled there.
    }
    socket.onclose = (event) => {
      if (this.socket !== socket) return
      this.socket = null
      this.stopHeartbeat()
      this.failPending(new CtiDisconnectedError('disconnected', 'The connection to the server was lost'))
      if (this.options.fatalCloseCodes.includes(event.code)) {
        this.wanted = false
        this.setStatus('closed')
        this.failOpenWaiters(new CtiDisconnectedError('unauthorized', 'The session is no longer valid'))
        this.emit({ type: 'cti.unauthorized', code: event.code, reason: event.reason })
        return
      }
      if (this.wanted) this.scheduleReconnect()
      else this.setStatus('closed')
    }
  }

  private handleMessage(data: unknown): void {
    if (typeof data !== 'string') return
    let message: unknown
    try {
      message = JSON.parse(data)
    } catch {
      return // not JSON: ignore rather than break the session
    }
    if (!message || typeof message !== 'object') return
    const record = message as Record<string, unknown>
    if ('reply_to' in record) {
      const id = String(record.reply_to)
      const pending = this.pending.get(id)
      if (!pending) return // a late reply to a command that already timed out
      this.pending.delete(id)
      clearTimeout(pending.timer)
      const reply = record as unknown as CtiReply
      if (reply.ok) pending.resolve(reply)
      else
        pending.reject(
          new CtiCommandError(reply.error?.code ?? 'refused', reply.error?.message ?? `${pending.op} was refused`),
        )
      return
    }
    if (typeof record.type !== 'string') return
    const event = record as CtiEvent
    if (!SNAPSHOT_TYPES.has(event.type) && typeof event.seq === 'number' && !this.firstTime(event)) return
    this.emit(event)
  }

  /** Whether an event is new. Logged events have their own sequence numbers, and a replay after a
   * reconnect may overlap what was seen: each is applied once. Frames the server makes without a log
   * entry (a withdrawn offer's `call.ended`) carry the current head's number, shared with the event
   * before them, so an old number alone does not make a frame a repeat: its type and call must match
   * one seen too. Snapshots (wallboard, queue counts) are never repeats and move nothing. */
  private firstTime(event: CtiEvent): boolean {
    const seq = event.seq as number
    const key = `${seq}|${event.type}|${String(event.call_id ?? '')}|${String(event.agent_id ?? '')}`
    if (this.lastSeq !== null && seq <= this.lastSeq && this.seen.has(key)) return false
    this.seen.add(key)
    if (this.seen.size > SEEN_LIMIT) this.seen.delete(this.seen.values().next().value as string)
    if (this.lastSeq === null || seq > this.lastSeq) this.lastSeq = seq
    return true
  }

  private emit(event: CtiEvent): void {
    for (const key of [event.type, '*']) {
      const set = this.listeners.get(key)
      if (!set) continue
      for (const listener of [...set]) {
        try {
          listener(event)
        } catch (error) {
          // One faulty listener must not stop the others or the connection.
          console.warn('CTI listener failed', error)
        }
      }
    }
  }

  private startHeartbeat(socket: CtiSocket): void {
    this.stopHeartbeat()
    this.heartbeat = setInterval(() => {
      if (this.socket !== socket) return
      this.send('ping', {}).catch(() => undefined)
    }, this.options.heartbeatMs)
  }

  private stopHeartbeat(): void {
    if (this.heartbeat !== null) clearInterval(this.heartbeat)
    this.heartbeat = null
  }

  /** Gives up on a socket that stopped answering: close it and let onclose reconnect. */
  private dropConnection(socket: CtiSocket): void {
    try {
      socket.close(4000, 'no reply')
    } catch {
      // ignore
    }
    // Some sockets never fire onclose after close() on a dead link: do its work now.
    const onclose = socket.onclose
    this.detach(socket)
    onclose?.({ code: 4000, reason: 'no reply' })
  }

  private detach(socket: CtiSocket): void {
    socket.onopen = null
    socket.onmessage = null
    socket.onclose = null
    socket.onerror = null
  }

  private scheduleReconnect(): void {
    this.socket = null
    this.attempts += 1
    this.setStatus('reconnecting')
    const base = Math.min(this.options.reconnectMaxMs, this.options.reconnectMinMs * 2 ** (this.attempts - 1))
    // Jitter keeps hundreds of agents from reconnecting in the same millisecond after a server restart.
    const delay = Math.round(base * (0.75 + 0.5 * this.options.random()))
    this.clearReconnect()
    this.reconnectTimer = setTimeout(() => {
      this.reconnectTimer = null
      if (this.wanted && !this.socket) this.openSocket()
    }, delay)
  }

  private clearReconnect(): void {
    if (this.reconnectTimer !== null) clearTimeout(this.reconnectTimer)
    this.reconnectTimer = null
  }

  private failPending(error: Error): void {
    for (const [id, pending] of this.pending) {
      clearTimeout(pending.timer)
      this.pending.delete(id)
      pending.reject(error)
    }
  }

  private failOpenWaiters(error: Error): void {
    for (const waiter of this.openWaiters.splice(0)) waiter.reject(error)
  }

  private setStatus(status: CtiStatus): void {
    if (this.status === status) return
    this.status = status
    for (const listener of this.statusListeners) listener(status)
  }
}
