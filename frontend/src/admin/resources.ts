// The configuration objects the admin console edits through the REST resources (docs/cti.md): which
// field names an item, which columns a table shows, and which form fields edit it. Bodies are the
// models of the configuration document; fields a form does not show are kept as they are (and can be
// edited in the form's JSON tab).

export type FieldType =
  | 'text'
  | 'password'
  | 'number'
  | 'switch'
  | 'select'
  | 'multiselect'
  | 'target'
  | 'skills'
  | 'calendar'

export type OptionSource = 'queues' | 'agents' | 'extensions' | 'flows'

export interface FieldDef {
  key: string
  /** Its label, `admin.fields.<label>`, when not `admin.fields.<key>`. */
  label?: string
  type: FieldType
  required?: boolean
  /** Fixed choices; labels come from `admin.options.<key>.<value>` when `labelled`. */
  options?: string[]
  labelled?: boolean
  /** Choices from another resource. */
  source?: OptionSource
  /** The item's name: set when creating, fixed afterwards (it is in the URL). */
  createOnly?: boolean
  /** Passwords: never shown; left empty on edit means "keep". */
  writeOnly?: boolean
  /** Required when creating only (a user's first password). */
  requiredOnCreate?: boolean
  min?: number
  max?: number
  step?: number
}

export interface ResourceDef {
  kind: string
  key: string
  columns: string[]
  fields: FieldDef[]
  defaults: () => Record<string, unknown>
  /** Fields the server reports but does not take back (timestamps). */
  readOnlyKeys?: string[]
}

export const ROLES = ['platform_admin', 'tenant_admin', 'supervisor', 'team_leader', 'qa', 'agent']
export const PERMISSIONS = [
  'config.read',
  'config.write',
  'users.manage',
  'audit.read',
  'live.read',
  'agents.control',
  'monitor',
  'cdrs.read',
  'numbers.full',
  'recordings.listen',
  'export',
  'cti.agent',
]
export const STRATEGIES = ['longest_idle', 'round_robin', 'linear', 'ring_all', 'random', 'fewest_calls', 'least_talk', 'best_skill']
export const TARGET_KINDS = ['flow', 'queue', 'extension', 'forward', 'echo', 'readback'] as const
export const TARGETS_WITH_REF = ['flow', 'queue', 'extension', 'forward']

export const RESOURCES: ResourceDef[] = [
  {
    kind: 'extensions',
    key: 'number',
    columns: ['number', 'name', 'caller_id_name', 'agent', 'outbound_trunk'],
    fields: [
      { key: 'number', type: 'text', required: true, createOnly: true },
      { key: 'password', type: 'password', required: true },
      { key: 'name', type: 'text' },
      { key: 'caller_id_name', type: 'text' },
      { key: 'caller_id_number', type: 'text' },
      { key: 'agent', type: 'select', source: 'agents' },
      { key: 'outbound_trunk', type: 'text' },
    ],
    defaults: () => ({ number: '', password: '', name: '' }),
  },
  {
    kind: 'numbers',
    key: 'number',
    columns: ['number', 'target', 'public'],
    fields: [
      { key: 'number', type: 'text', required: true, createOnly: true },
      { key: 'target', type: 'target', required: true },
      { key: 'public', type: 'switch' },
    ],
    defaults: () => ({ number: '', target: 'flow:main', public: true }),
  },
  {
    kind: 'queues',
    key: 'name',
    columns: ['name', 'display_name', 'strategy', 'acw_mode', 'wrap_up_seconds', 'max_wait', 'service_level_seconds'],
    fields: [
      { key: 'name', type: 'text', required: true, createOnly: true },
      { key: 'display_name', type: 'text' },
      { key: 'strategy', type: 'select', options: STRATEGIES, labelled: true },
      { key: 'acw_mode', type: 'select', options: ['none', 'timed', 'mandatory'], labelled: true },
      { key: 'wrap_up_seconds', type: 'number', min: 0, max: 3600 },
      { key: 'ring_timeout', type: 'number', min: 1, max: 300 },
      { key: 'max_wait', type: 'number', min: 1, max: 14400 },
      { key: 'max_length', type: 'number', min: 1, max: 100000 },
      { key: 'service_level_seconds', type: 'number', min: 1, max: 3600 },
      { key: 'service_level_target', type: 'number', min: 0, max: 100 },
      { key: 'priority', type: 'number', min: 0, max: 100 },
      { key: 'disposition_required', type: 'switch' },
    ],
    defaults: () => ({ name: '', display_name: '', strategy: 'longest_idle', acw_mode: 'timed', wrap_up_seconds: 5 }),
  },
  {
    kind: 'agents',
    key: 'id',
    columns: ['id', 'name', 'queues', 'skills', 'extension', 'enabled'],
    fields: [
      { key: 'id', type: 'text', required: true, createOnly: true, label: 'agent_no' },
      { key: 'name', type: 'text' },
      { key: 'password', type: 'password', writeOnly: true },
      { key: 'queues', type: 'multiselect', source: 'queues' },
      { key: 'skills', type: 'skills' },
      { key: 'extension', type: 'select', source: 'extensions' },
      { key: 'enabled', type: 'switch' },
    ],
    defaults: () => ({ id: '', name: '', queues: [], skills: {}, enabled: true }),
  },
  {
    kind: 'users',
    key: 'username',
    columns: ['username', 'display_name', 'roles', 'agent_id', 'department', 'enabled'],
    fields: [
      { key: 'username', type: 'text', required: true, createOnly: true },
      { key: 'display_name', type: 'text' },
      { key: 'password', type: 'password', writeOnly: true, requiredOnCreate: true },
      { key: 'roles', type: 'multiselect', options: ROLES, labelled: true },
      { key: 'permissions', type: 'multiselect', options: PERMISSIONS, labelled: true },
      { key: 'agent_id', type: 'select', source: 'agents' },
      { key: 'department', type: 'text' },
      { key: 'data_scope', type: 'select', options: ['all', 'department', 'self'], labelled: true },
      { key: 'enabled', type: 'switch' },
    ],
    defaults: () => ({ username: '', display_name: '', roles: ['agent'], permissions: [], enabled: true }),
    readOnlyKeys: ['password_changed_at', 'created_at', 'updated_at'],
  },
  {
    kind: 'reason-codes',
    key: 'code',
    columns: ['code', 'name', 'name_en', 'kind', 'max_minutes'],
    fields: [
      { key: 'code', type: 'text', required: true, createOnly: true },
      { key: 'name', type: 'text', required: true },
      { key: 'name_en', type: 'text' },
      { key: 'kind', type: 'select', options: ['not_ready', 'disposition'], labelled: true },
      { key: 'max_minutes', type: 'number', min: 1, max: 1440 },
    ],
    defaults: () => ({ code: '', name: '', name_en: '', kind: 'not_ready' }),
  },
  {
    kind: 'calendars',
    key: 'id',
    columns: ['id', 'name', 'timezone', 'weekly', 'holidays'],
    fields: [
      { key: 'id', type: 'text', required: true, createOnly: true },
      { key: 'name', type: 'text' },
      { key: 'timezone', type: 'text' },
      { key: 'weekly', type: 'calendar' },
    ],
    defaults: () => ({ id: '', name: '', timezone: 'Asia/Shanghai', weekly: {}, holidays: [], special_workdays: [] }),
  },
]

export function resource(kind: string): ResourceDef {
  const found = RESOURCES.find((item) => item.kind === kind)
  if (!found) throw new Error(`unknown resource ${kind}`)
  return found
}

// --- conversions between form inputs and the document's values -----------------------------------------------

/** A number target's text (`flow:main`, `echo`) as kind and reference. */
export function splitTarget(value: unknown): { kind: string; ref: string } {
  if (value && typeof value === 'object') {
    const record = value as { kind?: unknown; ref?: unknown }
    return { kind: String(record.kind ?? 'flow'), ref: record.ref == null ? '' : String(record.ref) }
  }
  const text = typeof value === 'string' ? value : ''
  const at = text.indexOf(':')
  return at < 0 ? { kind: text || 'flow', ref: '' } : { kind: text.slice(0, at), ref: text.slice(at + 1) }
}

export function joinTarget(kind: string, ref: string): string {
  return TARGETS_WITH_REF.includes(kind) ? `${kind}:${ref.trim()}` : kind
}

/** Agent skills `{sales: 5, support: {level: 3, preference: 7}}` as text `sales:5, support:3/7`. */
export function skillsToText(skills: unknown): string {
  if (!skills || typeof skills !== 'object') return ''
  return Object.entries(skills as Record<string, unknown>)
    .map(([skill, held]) => {
      if (typeof held === 'number') return `${skill}:${held}`
      const { level, preference } = (held ?? {}) as { level?: number; preference?: number }
      return preference != null && preference !== 5 ? `${skill}:${level}/${preference}` : `${skill}:${level}`
    })
    .join(', ')
}

/** The inverse of skillsToText; throws with the part that is wrong. */
export function textToSkills(text: string): Record<string, number | { level: number; preference: number }> {
  const skills: Record<string, number | { level: number; preference: number }> = {}
  for (const part of text.split(/[,，\s]+/).filter(Boolean)) {
    const match = /^([A-Za-z][A-Za-z0-9_-]{0,63}):([1-9])(?:\/([1-9]))?$/.exec(part)
    if (!match) throw new Error(part)
    const level = Number(match[2])
    skills[match[1]] = match[3] ? { level, preference: Number(match[3]) } : level
  }
  return skills
}

/** Opening ranges of one weekday as text `09:00-12:00, 13:30-18:00`. */
export function rangesToText(ranges: unknown): string {
  if (!Array.isArray(ranges)) return ''
  return ranges
    .map((range) => {
      const { start, end } = (range ?? {}) as { start?: string; end?: string }
      return `${String(start ?? '').slice(0, 5)}-${String(end ?? '').slice(0, 5)}`
    })
    .join(', ')
}

export function textToRanges(text: string): Array<{ start: string; end: string }> {
  const ranges: Array<{ start: string; end: string }> = []
  for (const part of text.split(/[,，;；]+/).map((item) => item.trim()).filter(Boolean)) {
    const match = /^(\d{1,2}):(\d{2})\s*[-–~至到]\s*(\d{1,2}):(\d{2})$/.exec(part)
    if (!match) throw new Error(part)
    const [h1, m1, h2, m2] = match.slice(1).map(Number)
    if (h1 > 23 || h2 > 24 || m1 > 59 || m2 > 59 || (h2 === 24 && m2 !== 0)) throw new Error(part)
    const pad = (n: number) => String(n).padStart(2, '0')
    ranges.push({ start: `${pad(h1)}:${pad(m1)}`, end: h2 === 24 ? '00:00' : `${pad(h2)}:${pad(m2)}` })
  }
  return ranges
}

/** The body to send for an item edited in the form: write-only fields left empty are dropped, and a
 * new agent password replaces the stored hash (the model takes one or the other). */
export function bodyForSave(def: ResourceDef, draft: Record<string, unknown>): Record<string, unknown> {
  const body: Record<string, unknown> = { ...draft }
  for (const key of def.readOnlyKeys ?? []) delete body[key]
  for (const field of def.fields) {
    const value = body[field.key]
    if (field.writeOnly && (value === '' || value == null)) delete body[field.key]
    else if (field.type === 'select' && !field.required && (value === '' || value == null)) delete body[field.key]
    // An empty optional text is "not set": the model's default ('' or none) applies, and fields with a
    // pattern (a trunk name, a department) would refuse ''.
    else if (field.type === 'text' && !field.required && value === '') delete body[field.key]
    else if (field.type === 'number' && (value === '' || value == null)) delete body[field.key]
  }
  if (typeof body.password === 'string' && body.password && 'password_hash' in body) delete body.password_hash
  return body
}
