// IVR flow documents (hotline.ivr.schema, IVR-01) and the editor's graph: boxes with one input and one
// handle per exit, connectors from an exit to the node it leads to. `flowToGraph` and `graphToFlow` are
// inverse: a flow converted to the graph and back is the same flow. Reserved targets (`@hangup`,
// `@return`) are not connectors: they stay on the node and show as labels on its exit.

export const NODE_TYPES = [
  'play',
  'menu',
  'collect',
  'set',
  'branch',
  'lookup',
  'queue',
  'transfer',
  'voicemail',
  'callback',
  'subflow',
  'language',
  'hangup',
] as const
export type NodeType = (typeof NODE_TYPES)[number]

export const HANGUP = '@hangup'
export const RETURN = '@return'
export const RESERVED_TARGETS = [HANGUP, RETURN] as const

export interface FlowNode {
  id: string
  type: NodeType
  name?: string
  timeout?: number
  exits?: Record<string, string | null | undefined>
  options?: Record<string, string>
  rules?: Array<{ when: unknown[]; goto: string }>
  [field: string]: unknown
}

export interface FlowDoc {
  schema_version?: number
  id: string
  name?: string
  description?: string
  version?: number
  entry: string
  default_exit?: string
  nodes: FlowNode[]
}

export type FlowHeader = Omit<FlowDoc, 'nodes'>

/** Named exits of each node type (hotline.ivr.schema's *Exits models), besides `default`. */
export const EXIT_NAMES: Record<NodeType, string[]> = {
  play: ['next'],
  menu: ['no_input', 'no_match'],
  collect: ['next', 'invalid', 'no_input'],
  set: ['next'],
  branch: ['otherwise'],
  lookup: ['next', 'fallback'],
  queue: ['timeout', 'overflow', 'unavailable'],
  transfer: ['failed'],
  voicemail: ['next', 'no_message'],
  callback: ['accepted', 'declined'],
  subflow: ['next'],
  language: ['next'],
  hangup: [],
}

export interface ExitSlot {
  /** Where the target is written in the node: `exits.next`, `options.1`, `rules.0.goto`. */
  key: string
  kind: 'exit' | 'option' | 'rule'
  /** The exit name, menu key, or rule index. */
  name: string
}

const KEY_ORDER = '1234567890*#'

export function sortKeys(keys: string[]): string[] {
  const rank = (key: string) => {
    const index = KEY_ORDER.indexOf(key)
    return index < 0 ? KEY_ORDER.length : index
  }
  return [...keys].sort((a, b) => rank(a) - rank(b) || a.localeCompare(b))
}

/** Every exit of a node, in the order its handles are drawn. A hang-up node has none. */
export function exitSlots(node: FlowNode): ExitSlot[] {
  if (node.type === 'hangup') return []
  const slots: ExitSlot[] = []
  if (node.type === 'menu' && node.options && typeof node.options === 'object') {
    for (const key of sortKeys(Object.keys(node.options))) slots.push({ key: `options.${key}`, kind: 'option', name: key })
  }
  if (node.type === 'branch' && Array.isArray(node.rules)) {
    node.rules.forEach((_rule, index) => slots.push({ key: `rules.${index}.goto`, kind: 'rule', name: String(index) }))
  }
  for (const name of EXIT_NAMES[node.type] ?? []) slots.push({ key: `exits.${name}`, kind: 'exit', name })
  slots.push({ key: 'exits.default', kind: 'exit', name: 'default' })
  return slots
}

/** The target written in a slot, or null when empty. */
export function getTarget(node: FlowNode, slotKey: string): string | null {
  const [section, name] = splitSlot(slotKey)
  if (section === 'options') return node.options?.[name] || null
  if (section === 'rules') return node.rules?.[Number(name)]?.goto || null
  return node.exits?.[name] || null
}

/** A copy of `node` with the slot pointing at `target` (null empties it). */
export function setTarget(node: FlowNode, slotKey: string, target: string | null): FlowNode {
  const [section, name] = splitSlot(slotKey)
  if (section === 'options') {
    return { ...node, options: { ...(node.options ?? {}), [name]: target ?? '' } }
  }
  if (section === 'rules') {
    const rules = [...(node.rules ?? [])]
    const index = Number(name)
    if (rules[index]) rules[index] = { ...rules[index], goto: target ?? '' }
    return { ...node, rules }
  }
  const exits = { ...(node.exits ?? {}) }
  if (target) exits[name] = target
  else delete exits[name]
  return { ...node, exits }
}

function splitSlot(slotKey: string): [string, string] {
  const [section, name] = slotKey.split('.')
  return [section, name ?? '']
}

/** A deep copy of JSON data (also of Vue's reactive proxies, which structuredClone refuses). */
export function jsonClone<T>(value: T): T {
  return JSON.parse(JSON.stringify(value)) as T
}

export const isReserved = (target: string | null | undefined): boolean => !!target && target.startsWith('@')

// --- the graph -----------------------------------------------------------------------------------------

export interface Position {
  x: number
  y: number
}

export interface GraphNode {
  id: string
  type: 'ivr'
  position: Position
  data: { node: FlowNode }
}

export interface GraphEdge {
  id: string
  source: string
  sourceHandle: string
  target: string
  targetHandle: string
}

export const edgeId = (source: string, slotKey: string) => `${source}:${slotKey}`
export const TARGET_HANDLE = 'in'

export const NODE_WIDTH = 220
const COLUMN_GAP = 280
const ROW_GAP = 48

/** Roughly how tall a node's box is drawn (header, id, summary, one row per exit), so that a column's
 * boxes do not overlap. */
export function estimatedHeight(node: FlowNode): number {
  return 80 + (node.name ? 16 : 0) + 17 * exitSlots(node).length
}

/** Columns by distance from the entry (breadth first, exits in handle order); unreachable nodes last. */
export function autoLayout(flow: Pick<FlowDoc, 'entry' | 'nodes'>): Record<string, Position> {
  const byId = new Map(flow.nodes.map((node) => [node.id, node]))
  const depth = new Map<string, number>()
  const order: string[] = []
  const queue: string[] = []
  if (byId.has(flow.entry)) {
    depth.set(flow.entry, 0)
    queue.push(flow.entry)
  }
  while (queue.length) {
    const id = queue.shift()!
    order.push(id)
    for (const slot of exitSlots(byId.get(id)!)) {
      const target = getTarget(byId.get(id)!, slot.key)
      if (target && byId.has(target) && !depth.has(target)) {
        depth.set(target, depth.get(id)! + 1)
        queue.push(target)
      }
    }
  }
  const lastColumn = Math.max(-1, ...depth.values()) + 1
  for (const node of flow.nodes) {
    if (!depth.has(node.id)) {
      depth.set(node.id, lastColumn)
      order.push(node.id)
    }
  }
  const nextY = new Map<number, number>()
  const positions: Record<string, Position> = {}
  for (const id of order) {
    const column = depth.get(id)!
    const y = nextY.get(column) ?? 40
    nextY.set(column, y + estimatedHeight(byId.get(id)!) + ROW_GAP)
    positions[id] = { x: 40 + column * COLUMN_GAP, y }
  }
  return positions
}

export function flowToGraph(
  flow: FlowDoc,
  positions: Record<string, Position> = {},
): { header: FlowHeader; nodes: GraphNode[]; edges: GraphEdge[] } {
  const { nodes: flowNodes, ...header } = flow
  const layout = autoLayout(flow)
  const ids = new Set(flowNodes.map((node) => node.id))
  const nodes: GraphNode[] = flowNodes.map((node) => ({
    id: node.id,
    type: 'ivr',
    position: positions[node.id] ?? layout[node.id] ?? { x: 0, y: 0 },
    data: { node: jsonClone(node) },
  }))
  const edges: GraphEdge[] = []
  for (const node of flowNodes) {
    for (const slot of exitSlots(node)) {
      const target = getTarget(node, slot.key)
      if (target && !isReserved(target) && ids.has(target)) {
        edges.push({ id: edgeId(node.id, slot.key), source: node.id, sourceHandle: slot.key, target, targetHandle: TARGET_HANDLE })
      }
    }
  }
  return { header, nodes, edges }
}

/** The flow document the graph shows. Connectors decide node targets; a slot without a connector keeps a
 * reserved target (`@hangup`) or becomes empty (its exit then falls back to `default`). */
export function graphToFlow(
  header: FlowHeader,
  nodes: Array<Pick<GraphNode, 'id' | 'data'>>,
  edges: Array<Pick<GraphEdge, 'source' | 'sourceHandle' | 'target'>>,
): FlowDoc {
  const ids = new Set(nodes.map((node) => node.id))
  const bySlot = new Map<string, string>()
  for (const edge of edges) {
    if (ids.has(edge.source) && ids.has(edge.target)) bySlot.set(edgeId(edge.source, edge.sourceHandle), edge.target)
  }
  const flowNodes = nodes.map((graphNode) => {
    let node = jsonClone(graphNode.data.node)
    for (const slot of exitSlots(node)) {
      const connected = bySlot.get(edgeId(node.id, slot.key))
      const written = getTarget(node, slot.key)
      if (connected) {
        if (written !== connected) node = setTarget(node, slot.key, connected)
      } else if (written && !isReserved(written)) {
        node = setTarget(node, slot.key, null)
      }
    }
    return node
  })
  return { ...header, nodes: flowNodes }
}

// --- editing helpers ----------------------------------------------------------------------------------------

export function suggestId(type: NodeType, existing: Iterable<string>): string {
  const taken = new Set(existing)
  for (let n = 1; n < 10_000; n++) {
    const id = `${type}_${n}`
    if (!taken.has(id)) return id
  }
  return `${type}_${Date.now()}`
}

export const NODE_ID_PATTERN = /^[A-Za-z][A-Za-z0-9_-]{0,63}$/

const tts = (zh: string, en: string) => [{ kind: 'tts', text: { zh, en } }]

/** A new node of a type with the fields it needs filled in, so it saves without schema errors. */
export function newNode(type: NodeType, id: string): FlowNode {
  switch (type) {
    case 'play':
      return { id, type, prompts: tts('', ''), exits: {} }
    case 'menu':
      return { id, type, prompts: tts('', ''), options: { '1': '' }, input_timeout: 5, retries: 2, exits: {} }
    case 'collect':
      return { id, type, prompts: tts('', ''), store_as: 'digits', min_digits: 1, max_digits: 16, exits: {} }
    case 'set':
      return { id, type, assignments: { key: 'value' }, exits: {} }
    case 'branch':
      return { id, type, rules: [{ when: [{ subject: 'ani', op: 'exists' }], goto: '' }], exits: {} }
    case 'lookup':
      return { id, type, url: 'http://127.0.0.1/', method: 'GET', exits: {} }
    case 'queue':
      return { id, type, queue: '', max_wait: 300, exits: {} }
    case 'transfer':
      return { id, type, target: { kind: 'extension', address: '' }, exits: {} }
    case 'voicemail':
      return { id, type, prompts: [], mailbox: { kind: 'tenant' }, exits: {} }
    case 'callback':
      return { id, type, prompts: tts('', ''), queue: '', exits: {} }
    case 'subflow':
      return { id, type, flow: '', exits: {} }
    case 'language':
      return { id, type, prompts: tts('', ''), options: { '1': 'zh', '2': 'en' }, exits: {} }
    case 'hangup':
      return { id, type }
  }
}

/** The flow without `node`, and with every exit that led to it emptied. */
export function removeNode(flow: FlowDoc, nodeId: string): FlowDoc {
  const nodes = flow.nodes
    .filter((node) => node.id !== nodeId)
    .map((node) => {
      let result = node
      for (const slot of exitSlots(node)) {
        if (getTarget(node, slot.key) === nodeId) result = setTarget(result, slot.key, null)
      }
      return result
    })
  return { ...flow, nodes, entry: flow.entry === nodeId ? (nodes[0]?.id ?? '') : flow.entry }
}

// --- validation problems from the server ---------------------------------------------------------------------

/** Keys of a 422's `fields` that mean the flow itself (the server's is `@flow`). */
const FLOW_KEYS = new Set(['_', 'flow', '@flow'])

export interface NodeProblems {
  byNode: Record<string, string[]>
  general: string[]
}

function messages(value: unknown): string[] {
  if (value == null) return []
  if (typeof value === 'string') return [value]
  if (Array.isArray(value)) return value.flatMap(messages)
  if (typeof value === 'object') {
    const record = value as Record<string, unknown>
    if (typeof record.message === 'string') {
      return [record.field ? `${String(record.field)}: ${record.message}` : record.message]
    }
    return Object.entries(record).flatMap(([key, item]) => messages(item).map((text) => `${key}: ${text}`))
  }
  return [String(value)]
}

/** The `fields` of a 422 (keyed by node id, docs/cti.md) sorted onto the nodes; keys that name no node
 * (the flow itself) are general. Paths such as `nodes.menu.options.1` or `nodes[menu]` also find their node. */
export function problemsByNode(fields: Record<string, unknown>, nodeIds: Iterable<string>): NodeProblems {
  const ids = new Set(nodeIds)
  const result: NodeProblems = { byNode: {}, general: [] }
  for (const [key, value] of Object.entries(fields ?? {})) {
    let nodeId: string | null = ids.has(key) ? key : null
    let rest = ''
    if (!nodeId) {
      const match = /(?:^|\.)nodes?(?:\.|\[)([A-Za-z][A-Za-z0-9_-]*)\]?(?:\.(.*))?$/.exec(key)
      if (match && ids.has(match[1])) {
        nodeId = match[1]
        rest = match[2] ?? ''
      }
    }
    const texts = messages(value).map((text) => (rest ? `${rest}: ${text}` : text))
    if (nodeId) (result.byNode[nodeId] ??= []).push(...texts)
    else result.general.push(...texts.map((text) => (key && !FLOW_KEYS.has(key) ? `${key}: ${text}` : text)))
  }
  return result
}

/** A flow version as GET /api/v1/flows/{id} gives it: `{"version", "document"}`, or a bare document. */
function versionDocument(value: unknown): { flow: FlowDoc; version: number | null } | null {
  if (!value || typeof value !== 'object') return null
  const record = value as Record<string, unknown>
  if (record.document && typeof record.document === 'object' && Array.isArray((record.document as FlowDoc).nodes)) {
    const version = typeof record.version === 'number' ? record.version : null
    return { flow: { ...(record.document as FlowDoc), ...(version !== null ? { version } : {}) }, version }
  }
  if (Array.isArray((record as unknown as FlowDoc).nodes)) {
    const flow = record as unknown as FlowDoc
    return { flow, version: typeof flow.version === 'number' ? flow.version : null }
  }
  return null
}

/** The editable flow from GET /api/v1/flows/{id}: the draft when there is one, else the published flow.
 * Accepts `{"draft", "published"}` bodies (each a `{"version", "document"}` or a document) and a bare flow. */
export function editableFlow(body: unknown): { flow: FlowDoc | null; publishedVersion: number | null; hasDraft: boolean } {
  if (!body || typeof body !== 'object') return { flow: null, publishedVersion: null, hasDraft: false }
  const record = body as Record<string, unknown>
  if ('draft' in record || 'published' in record) {
    const draft = versionDocument(record.draft)
    const published = versionDocument(record.published)
    const version =
      published?.version ??
      (typeof record.published_version === 'number' ? record.published_version : null) ??
      (typeof record.version === 'number' ? record.version : null)
    return { flow: (draft ?? published)?.flow ?? null, publishedVersion: version, hasDraft: draft !== null }
  }
  const bare = versionDocument(record)
  if (bare) return { flow: bare.flow, publishedVersion: bare.version, hasDraft: false }
  if (record.flow) return editableFlow(record.flow)
  return { flow: null, publishedVersion: null, hasDraft: false }
}
