// A WebSocket stand-in for the CTI client tests: records what the client sends and lets the test play
// the server.
import type { CtiSocket } from '@/cti/client'

export class FakeSocket implements CtiSocket {
  static all: FakeSocket[] = []
  readyState = 0
  sent: Array<Record<string, unknown>> = []
  closedWith: { code?: number; reason?: string } | null = null
  onopen: ((event: unknown) => void) | null = null
  onmessage: ((event: { data: unknown }) => void) | null = null
  onclose: ((event: { code: number; reason: string }) => void) | null = null
  onerror: ((event: unknown) => void) | null = null

  constructor(readonly url: string) {
    FakeSocket.all.push(this)
  }

  static reset(): void {
    FakeSocket.all = []
  }

  static last(): FakeSocket {
    const socket = FakeSocket.all[FakeSocket.all.length - 1]
    if (!socket) throw new Error('no socket was opened')
    return socket
  }

  send(data: string): void {
    if (this.readyState !== 1) throw new Error('socket not open')
    this.sent.push(JSON.parse(data))
  }

  close(code?: number, reason?: string): void {
    this.closedWith = { code, reason }
    this.readyState = 3
  }

  // --- the server's side ---
  open(): void {
    this.readyState = 1
    this.onopen?.({})
  }

  receive(message: unknown): void {
    this.onmessage?.({ data: typeof message === 'string' ? message : JSON.stringify(message) })
  }

  drop(code = 1006, reason = ''): void {
    this.readyState = 3
    this.onclose?.({ code, reason })
  }

  lastSent(op?: string): Record<string, unknown> {
    const matching = op ? this.sent.filter((message) => message.op === op) : this.sent
    const message = matching[matching.length - 1]
    if (!message) throw new Error(`nothing sent${op ? ` with op ${op}` : ''}`)
    return message
  }

  reply(message: Record<string, unknown>, fields: Record<string, unknown> = {}, ok = true): void {
    this.receive({ reply_to: message.id, ok, ...fields })
  }

  /** Opens and answers the hello, as a server does. */
  accept(helloFields: Record<string, unknown> = {}): void {
    this.open()
    this.reply(this.lastSent('hello'), helloFields)
  }
}

export const fakeFactory = (url: string) => new FakeSocket(url)
