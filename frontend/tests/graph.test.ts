import { describe, expect, it } from 'vitest'
import demo from './fixtures/demo-flow.json'
import {
  autoLayout,
  editableFlow,
  exitSlots,
  type FlowDoc,
  type FlowNode,
  flowToGraph,
  getTarget,
  graphToFlow,
  newNode,
  NODE_TYPES,
  type NodeType,
  problemsByNode,
  removeNode,
  setTarget,
  suggestId,
} from '@/ivr/graph'

const demoFlow = demo as unknown as FlowDoc

function roundTrip(flow: FlowDoc): FlowDoc {
  const graph = flowToGraph(flow)
  return graphToFlow(graph.header, graph.nodes, graph.edges)
}

// A small seeded generator (mulberry32), so a failure names the seed that reproduces it.
function random(seed: number) {
  let state = seed >>> 0
  return () => {
    state = (state + 0x6d2b79f5) >>> 0
    let t = state
    t = Math.imul(t ^ (t >>> 15), t | 1)
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61)
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296
  }
}

function randomFlow(seed: number): FlowDoc {
  const next = random(seed)
  const pick = <T>(items: readonly T[]): T => items[Math.floor(next() * items.length)]
  const count = 1 + Math.floor(next() * 12)
  const nodes: FlowNode[] = []
  for (let i = 0; i < count; i++) {
    const type = pick(NODE_TYPES) as NodeType
    let node = newNode(type, `${type}_${i}`)
    if (type === 'menu') node = { ...node, options: Object.fromEntries(['1', '2', '0', '*'].slice(0, 1 + Math.floor(next() * 4)).map((key) => [key, ''])) }
    if (type === 'branch') node = { ...node, rules: [{ when: [], goto: '' }, { when: [], goto: '' }].slice(0, 1 + Math.floor(next() * 2)) }
    nodes.push(node)
  }
  const targets = [...nodes.map((node) => node.id), '@hangup', '@return']
  const filled = nodes.map((node) => {
    let result = node
    for (const slot of exitSlots(node)) {
      // Options and rules always lead somewhere (the schema needs it); named exits only sometimes.
      if (slot.kind !== 'exit' || next() < 0.6) result = setTarget(result, slot.key, pick(targets))
    }
    return result
  })
  return { schema_version: 1, id: `flow_${seed}`, name: '随机 random', entry: filled[0].id, default_exit: '@hangup', nodes: filled }
}

describe('IVR graph <-> flow JSON', () => {
  it('shows the demo flow as boxes and connectors', () => {
    const { nodes, edges, header } = flowToGraph(demoFlow)
    expect(nodes.map((node) => node.id)).toEqual(demoFlow.nodes.map((node) => node.id))
    expect(header).toMatchObject({ id: 'main', entry: 'welcome' })
    const menuEdges = edges.filter((edge) => edge.source === 'menu').map((edge) => [edge.sourceHandle, edge.target])
    expect(menuEdges).toEqual([
      ['options.1', 'sales'],
      ['options.2', 'support'],
      ['options.9', 'voicemail'],
      ['options.0', 'operator'],
      ['exits.no_input', 'operator'],
      ['exits.no_match', 'operator'],
    ])
    expect(edges.find((edge) => edge.source === 'hours' && edge.sourceHandle === 'rules.1.goto')?.target).toBe('menu')
    expect(edges.some((edge) => edge.source === 'goodbye')).toBe(false)
  })

  it('gives the demo flow back unchanged', () => {
    expect(roundTrip(demoFlow)).toEqual(demoFlow)
  })

  it('gives random flows back unchanged, reserved targets included', () => {
    for (let seed = 1; seed <= 300; seed++) {
      const flow = randomFlow(seed)
      expect(roundTrip(flow), `seed ${seed}`).toEqual(flow)
    }
  })

  it('writes a new connector into the exit it was dragged from', () => {
    const graph = flowToGraph(demoFlow)
    const edges = graph.edges.filter((edge) => !(edge.source === 'menu' && edge.sourceHandle === 'exits.no_match'))
    edges.push({ id: 'x', source: 'menu', sourceHandle: 'exits.no_match', target: 'voicemail', targetHandle: 'in' })
    edges.push({ id: 'y', source: 'welcome', sourceHandle: 'exits.default', target: 'goodbye', targetHandle: 'in' })
    const flow = graphToFlow(graph.header, graph.nodes, edges)
    const menu = flow.nodes.find((node) => node.id === 'menu')!
    expect(menu.exits).toMatchObject({ no_input: 'operator', no_match: 'voicemail' })
    expect(flow.nodes.find((node) => node.id === 'welcome')!.exits).toEqual({ next: 'hours', default: 'goodbye' })
  })

  it('empties an exit whose connector was deleted, but keeps a hang-up exit that never had one', () => {
    let flow: FlowDoc = { id: 'f', entry: 'a', nodes: [
      { id: 'a', type: 'play', prompts: [], exits: { next: 'b', default: '@hangup' } },
      { id: 'b', type: 'hangup' },
    ] }
    const graph = flowToGraph(flow)
    expect(graph.edges).toHaveLength(1)
    flow = graphToFlow(graph.header, graph.nodes, [])
    expect(flow.nodes[0].exits).toEqual({ default: '@hangup' })
  })

  it('keeps a menu option when its connector is deleted, with an empty target for the server to flag', () => {
    const graph = flowToGraph(demoFlow)
    const edges = graph.edges.filter((edge) => !(edge.source === 'menu' && edge.sourceHandle === 'options.2'))
    const menu = graphToFlow(graph.header, graph.nodes, edges).nodes.find((node) => node.id === 'menu')!
    expect(menu.options).toEqual({ '1': 'sales', '2': '', '0': 'operator', '9': 'voicemail' })
  })

  it('ignores connectors to or from nodes that are gone', () => {
    const graph = flowToGraph(demoFlow)
    const nodes = graph.nodes.filter((node) => node.id !== 'closed')
    const flow = graphToFlow(graph.header, nodes, graph.edges)
    expect(flow.nodes.find((node) => node.id === 'hours')!.exits).toEqual({})
  })

  it('removes a node and every exit that led to it', () => {
    const flow = removeNode(demoFlow, 'operator')
    const menu = flow.nodes.find((node) => node.id === 'menu')!
    expect(flow.nodes.some((node) => node.id === 'operator')).toBe(false)
    expect(menu.options!['0']).toBe('')
    expect(menu.exits).toEqual({})
    expect(removeNode(demoFlow, 'welcome').entry).toBe('hours')
  })

  it('lists exits per node type in handle order', () => {
    const menu = demoFlow.nodes.find((node) => node.id === 'menu')!
    expect(exitSlots(menu).map((slot) => slot.key)).toEqual([
      'options.1', 'options.2', 'options.9', 'options.0', 'exits.no_input', 'exits.no_match', 'exits.default',
    ])
    expect(exitSlots({ id: 'q', type: 'queue' }).map((slot) => slot.key)).toEqual([
      'exits.timeout', 'exits.overflow', 'exits.unavailable', 'exits.default',
    ])
    expect(exitSlots({ id: 'h', type: 'hangup' })).toEqual([])
    expect(getTarget(menu, 'options.9')).toBe('voicemail')
    expect(getTarget(menu, 'exits.default')).toBeNull()
  })

  it('lays nodes out in columns by distance from the entry, unreachable ones last', () => {
    const positions = autoLayout({ ...demoFlow, nodes: [...demoFlow.nodes, { id: 'orphan', type: 'hangup' }] })
    expect(positions.welcome.x).toBeLessThan(positions.hours.x)
    expect(positions.hours.x).toBeLessThan(positions.menu.x)
    expect(positions.menu.x).toBeLessThan(positions.sales.x)
    expect(positions.orphan.x).toBeGreaterThan(positions.goodbye.x)
    const spots = new Set(Object.values(positions).map((p) => `${p.x},${p.y}`))
    expect(spots.size).toBe(demoFlow.nodes.length + 1)
  })

  it('keeps positions given for nodes', () => {
    const { nodes } = flowToGraph(demoFlow, { menu: { x: 5, y: 6 } })
    expect(nodes.find((node) => node.id === 'menu')!.position).toEqual({ x: 5, y: 6 })
  })

  it('suggests unused node ids', () => {
    expect(suggestId('menu', ['menu_1', 'menu_2'])).toBe('menu_3')
    expect(suggestId('play', [])).toBe('play_1')
  })
})

describe('validation problems from the server', () => {
  it('puts each problem on its node; the rest are about the flow', () => {
    const problems = problemsByNode(
      {
        menu: 'options.1: missing_target: no node "salez"',
        sales: ['queue is required', { message: 'timeout too short', field: 'max_wait' }],
        'nodes.goodbye.prompts.0.text': 'empty prompt',
        'nodes[closed]': 'unreachable',
        entry: 'no node "start"',
        _: 'flow has a loop without exit',
        '@flow': 'entry: no node "begin"',
      },
      demoFlow.nodes.map((node) => node.id),
    )
    expect(problems.byNode).toEqual({
      menu: ['options.1: missing_target: no node "salez"'],
      sales: ['queue is required', 'max_wait: timeout too short'],
      goodbye: ['prompts.0.text: empty prompt'],
      closed: ['unreachable'],
    })
    expect(problems.general).toEqual(['entry: no node "start"', 'flow has a loop without exit', 'entry: no node "begin"'])
  })
})

describe('the editable flow of GET /flows/{id}', () => {
  it("reads the server's {version, document} versions", () => {
    const body = {
      id: 'main',
      name: 'Demo',
      published: { version: 3, document: demoFlow },
      draft: { version: 4, document: { ...demoFlow, name: 'draft' } },
      versions: [{ version: 3, status: 'published' }, { version: 4, status: 'draft' }],
    }
    expect(editableFlow(body)).toEqual({ flow: { ...demoFlow, name: 'draft', version: 4 }, publishedVersion: 3, hasDraft: true })
    expect(editableFlow({ ...body, draft: null })).toEqual({ flow: { ...demoFlow, version: 3 }, publishedVersion: 3, hasDraft: false })
  })

  it('prefers the draft, and knows the published version', () => {
    const draft = { ...demoFlow, name: 'draft' }
    expect(editableFlow({ id: 'main', draft, published: { ...demoFlow, version: 3 } })).toEqual({ flow: draft, publishedVersion: 3, hasDraft: true })
    expect(editableFlow({ id: 'main', draft: null, published: { ...demoFlow, version: 3 }, version: 3 })).toMatchObject({ hasDraft: false, publishedVersion: 3 })
    expect(editableFlow({ ...demoFlow, version: 2 })).toMatchObject({ publishedVersion: 2, hasDraft: false })
    expect(editableFlow({ flow: demoFlow }).flow).toEqual(demoFlow)
    expect(editableFlow('nonsense').flow).toBeNull()
  })
})
