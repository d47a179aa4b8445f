import { afterEach, describe, expect, it, vi } from 'vitest'
import { api, ApiError, errorFromBody, listAll, onUnauthorized, pageItems } from '@/api/http'

const respond = (status: number, body: unknown) => new Response(body === undefined ? '' : JSON.stringify(body), { status })

describe('the REST client', () => {
  afterEach(() => {
    vi.unstubAllGlobals()
    vi.useRealTimers()
  })

  it("reads the server's error format, FastAPI's, and anything else", () => {
    const ours = errorFromBody(422, { error: { code: 'invalid', message: 'Bad flow', fields: { menu: 'no target' } } })
    expect(ours).toMatchObject({ status: 422, code: 'invalid', message: 'Bad flow', fields: { menu: 'no target' } })
    const fastapi = errorFromBody(422, { detail: [{ loc: ['body', 'number'], msg: 'field required' }] }, 'Unprocessable')
    expect(fastapi.fields).toEqual({ number: 'field required' })
    expect(errorFromBody(500, 'oops', 'Internal Server Error')).toMatchObject({ code: 'http_500', message: 'Internal Server Error' })
  })

  it('sends JSON with the cookie and returns the parsed body', async () => {
    const fetchMock = vi.fn(async () => respond(200, { ok: 1 }))
    vi.stubGlobal('fetch', fetchMock)
    await expect(api.post('/session', { tenant: 'demo' })).resolves.toEqual({ ok: 1 })
    const [url, init] = fetchMock.mock.calls[0] as unknown as [string, RequestInit]
    expect(url).toBe('/api/v1/session')
    expect(init.credentials).toBe('same-origin')
    expect(init.body).toBe('{"tenant":"demo"}')
    await api.get('/cdrs', { query: { from: 'a b', limit: 5, to: undefined } })
    expect((fetchMock.mock.calls[1] as unknown as [string])[0]).toBe('/api/v1/cdrs?from=a+b&limit=5')
  })

  it('tells listeners about a lost session, but not for the sign-in itself', async () => {
    const seen: number[] = []
    const stop = onUnauthorized(() => seen.push(1))
    vi.stubGlobal('fetch', vi.fn(async () => respond(401, { error: { code: 'bad_credentials', message: 'no' } })))
    await expect(api.post('/session', {})).rejects.toMatchObject({ status: 401, code: 'bad_credentials' })
    expect(seen).toEqual([])
    await expect(api.get('/queues')).rejects.toBeInstanceOf(ApiError)
    expect(seen).toEqual([1])
    stop()
  })

  it('turns network failures and silence into errors with codes', async () => {
    vi.stubGlobal('fetch', vi.fn(async () => Promise.reject(new TypeError('Failed to fetch'))))
    await expect(api.get('/live')).rejects.toMatchObject({ status: 0, code: 'network' })
    vi.stubGlobal(
      'fetch',
      vi.fn((_url: string, init: RequestInit) => new Promise((_resolve, reject) => init.signal!.addEventListener('abort', () => reject(new DOMException('aborted', 'AbortError'))))),
    )
    vi.useFakeTimers()
    const slow = api.get('/live', { timeoutMs: 1000 }).catch((error) => error)
    await vi.advanceTimersByTimeAsync(1000)
    expect(await slow).toMatchObject({ code: 'timeout' })
  })

  it('pages through lists, and stops after a bounded number of pages', async () => {
    const fetchMock = vi.fn(async (url: string) => {
      const offset = Number(new URL(url, 'http://x').searchParams.get('offset'))
      const items = offset < 5 ? Array.from({ length: Math.min(2, 5 - offset) }, (_, i) => ({ n: offset + i })) : []
      return respond(200, { items, total: 5 })
    })
    vi.stubGlobal('fetch', fetchMock)
    expect((await listAll<{ n: number }>('/agents', 2)).map((item) => item.n)).toEqual([0, 1, 2, 3, 4])
    expect(pageItems([1, 2])).toEqual({ items: [1, 2], total: 2 })
    vi.stubGlobal('fetch', vi.fn(async () => respond(200, { items: [{}], total: 1_000_000 })))
    expect(await listAll('/agents', 1, 3)).toHaveLength(3)
  })
})
