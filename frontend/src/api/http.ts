// The REST client: JSON over fetch with the session cookie, one error type for every failure
// (the server's `{"error": {"code", "message", "fields"}}`, a network failure, or a timeout).

export class ApiError extends Error {
  readonly status: number
  readonly code: string
  readonly fields: Record<string, unknown>

  constructor(status: number, code: string, message: string, fields: Record<string, unknown> = {}) {
    super(message)
    this.name = 'ApiError'
    this.status = status
    this.code = code
    this.fields = fields
  }
}

export interface RequestOptions {
  query?: Record<string, string | number | undefined | null>
  timeoutMs?: number
  signal?: AbortSignal
}

type UnauthorizedListener = () => void
const unauthorizedListeners = new Set<UnauthorizedListener>()

/** Called whenever an API request answers 401 (the session expired or was signed out elsewhere). */
export function onUnauthorized(listener: UnauthorizedListener): () => void {
  unauthorizedListeners.add(listener)
  return () => unauthorizedListeners.delete(listener)
}

export const API_BASE = '/api/v1'
const DEFAULT_TIMEOUT_MS = 10_000

function buildUrl(path: string, query?: RequestOptions['query']): string {
  let url = path.startsWith('/api/') ? path : `${API_BASE}${path}`
  if (query) {
    const params = new URLSearchParams()
    for (const [key, value] of Object.entries(query)) {
      if (value !== undefined && value !== null && value !== '') params.set(key, String(value))
    }
    const text = params.toString()
    if (text) url += `?${text}`
  }
  return url
}

/** Turns an error response body into an ApiError; bodies that are not our error format still give a sentence. */
export function errorFromBody(status: number, body: unknown, statusText = ''): ApiError {
  if (body && typeof body === 'object' && 'error' in body) {
    const error = (body as { error: unknown }).error
    if (error && typeof error === 'object') {
      const { code, message, fields } = error as { code?: unknown; message?: unknown; fields?: unknown }
      return new ApiError(
        status,
        typeof code === 'string' ? code : `http_${status}`,
        typeof message === 'string' && message ? message : statusText || `HTTP ${status}`,
        fields && typeof fields === 'object' ? (fields as Record<string, unknown>) : {},
      )
    }
  }
  // FastAPI's own validation format, in case a route answers before our error handler shapes it.
  if (body && typeof body === 'object' && Array.isArray((body as { detail?: unknown }).detail)) {
    const fields: Record<string, unknown> = {}
    for (const item of (body as { detail: Array<{ loc?: unknown[]; msg?: string }> }).detail) {
      const path = (item.loc ?? []).filter((part) => part !== 'body').join('.')
      fields[path || '_'] = item.msg ?? 'invalid'
    }
    return new ApiError(status, 'validation', statusText || 'Invalid input', fields)
  }
  if (body && typeof body === 'object' && typeof (body as { detail?: unknown }).detail === 'string') {
    return new ApiError(status, `http_${status}`, (body as { detail: string }).detail)
  }
  return new ApiError(status, `http_${status}`, statusText || `HTTP ${status}`)
}

export async function request<T>(
  method: string,
  path: string,
  body?: unknown,
  options: RequestOptions = {},
): Promise<T> {
  const controller = new AbortController()
  const timeout = setTimeout(() => controller.abort(), options.timeoutMs ?? DEFAULT_TIMEOUT_MS)
  const onOuterAbort = () => controller.abort()
  options.signal?.addEventListener('abort', onOuterAbort)
  let response: Response
  try {
    response = await fetch(buildUrl(path, options.query), {
      method,
      credentials: 'same-origin',
      headers: body === undefined ? { Accept: 'application/json' } : { Accept: 'application/json', 'Content-Type': 'application/json' },
      body: body === undefined ? undefined : JSON.stringify(body),
      signal: controller.signal,
    })
  } catch (error) {
    if (controller.signal.aborted && !options.signal?.aborted) {
      throw new ApiError(0, 'timeout', 'The server did not answer in time')
    }
    throw new ApiError(0, 'network', error instanceof Error ? error.message : 'Network error')
  } finally {
    clearTimeout(timeout)
    options.signal?.removeEventListener('abort', onOuterAbort)
  }
  const text = await response.text()
  let parsed: unknown = undefined
  if (text) {
    try {
      parsed = JSON.parse(text)
    } catch {
      parsed = undefined
    }
  }
  if (!response.ok) {
    if (response.status === 401 && !path.endsWith('/session')) {
      for (const listener of unauthorizedListeners) listener()
    }
    throw errorFromBody(response.status, parsed, response.statusText)
  }
  return parsed as T
}

export const api = {
  get: <T>(path: string, options?: RequestOptions) => request<T>('GET', path, undefined, options),
  post: <T>(path: string, body?: unknown, options?: RequestOptions) => request<T>('POST', path, body ?? {}, options),
  put: <T>(path: string, body: unknown, options?: RequestOptions) => request<T>('PUT', path, body, options),
  delete: <T>(path: string, options?: RequestOptions) => request<T>('DELETE', path, undefined, options),
}

export interface Page<T> {
  items: T[]
  total: number
}

/** A list endpoint's items, whether it answers `{"items": [...], "total"}` or a bare array. */
export function pageItems<T>(body: unknown): Page<T> {
  if (Array.isArray(body)) return { items: body as T[], total: body.length }
  if (body && typeof body === 'object' && Array.isArray((body as Page<T>).items)) {
    const page = body as Page<T>
    return { items: page.items, total: typeof page.total === 'number' ? page.total : page.items.length }
  }
  return { items: [], total: 0 }
}

/** Every item of a paged list (bounded: at most `maxPages` requests). */
export async function listAll<T>(path: string, pageSize = 200, maxPages = 50): Promise<T[]> {
  const items: T[] = []
  for (let page = 0; page < maxPages; page++) {
    const body = await api.get<unknown>(path, { query: { offset: page * pageSize, limit: pageSize } })
    const chunk = pageItems<T>(body)
    items.push(...chunk.items)
    if (chunk.items.length < pageSize || items.length >= chunk.total) break
  }
  return items
}
