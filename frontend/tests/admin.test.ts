import { describe, expect, it } from 'vitest'
import { bodyForSave, joinTarget, rangesToText, resource, RESOURCES, skillsToText, splitTarget, textToRanges, textToSkills } from '@/admin/resources'
import type { SessionInfo } from '@/api/types'
import { homeFor, pagesFor, permissionsOf } from '@/stores/session'
import en from '@/i18n/en'
import zhCN from '@/i18n/zh-CN'

function keys(value: unknown, prefix = ''): string[] {
  if (!value || typeof value !== 'object' || Array.isArray(value)) return [prefix]
  return Object.entries(value as Record<string, unknown>).flatMap(([key, item]) => keys(item, prefix ? `${prefix}.${key}` : key))
}

describe('admin form conversions', () => {
  it('writes agent skills as text and back', () => {
    const skills = { sales: 5, support: { level: 3, preference: 7 }, vip: { level: 9, preference: 5 } }
    const text = skillsToText(skills)
    expect(text).toBe('sales:5, support:3/7, vip:9')
    expect(textToSkills(text)).toEqual({ sales: 5, support: { level: 3, preference: 7 }, vip: 9 })
    expect(textToSkills('sales:5，support:2')).toEqual({ sales: 5, support: 2 })
    expect(() => textToSkills('sales:0')).toThrow('sales:0')
    expect(() => textToSkills('9lives:3')).toThrow()
  })

  it('writes opening hours as text and back', () => {
    expect(textToRanges('9:00-12:00, 13:30~18:00')).toEqual([
      { start: '09:00', end: '12:00' },
      { start: '13:30', end: '18:00' },
    ])
    expect(textToRanges('22:00-24:00')).toEqual([{ start: '22:00', end: '00:00' }])
    expect(textToRanges('')).toEqual([])
    expect(() => textToRanges('25:00-26:00')).toThrow()
    expect(() => textToRanges('nine to five')).toThrow()
    expect(rangesToText([{ start: '09:00:00', end: '18:00' }])).toBe('09:00-18:00')
  })

  it('splits and joins number targets', () => {
    expect(splitTarget('flow:main')).toEqual({ kind: 'flow', ref: 'main' })
    expect(splitTarget('echo')).toEqual({ kind: 'echo', ref: '' })
    expect(splitTarget({ kind: 'queue', ref: 'sales' })).toEqual({ kind: 'queue', ref: 'sales' })
    expect(joinTarget('forward', ' 13800000000 ')).toBe('forward:13800000000')
    expect(joinTarget('readback', 'x')).toBe('readback')
  })

  it('leaves an empty password out (keep it), and a new one replaces the stored hash', () => {
    const agents = resource('agents')
    expect(bodyForSave(agents, { id: '8001', password: '', password_hash: '$argon2id$x', extension: '' })).toEqual({ id: '8001', password_hash: '$argon2id$x' })
    expect(bodyForSave(agents, { id: '8001', password: 'abc12345x', password_hash: '$argon2id$x' })).toEqual({ id: '8001', password: 'abc12345x' })
    expect(bodyForSave(resource('queues'), { name: 'sales', max_length: null })).toEqual({ name: 'sales' })
    expect(bodyForSave(resource('extensions'), { number: '1001', password: 'abc12345x', outbound_trunk: '' })).toEqual({ number: '1001', password: 'abc12345x' })
    // A user as GET gives it goes back without the timestamps the server keeps for itself.
    const user = { username: 'lead', roles: ['supervisor'], permissions: [], enabled: true, password: '', created_at: 'x', updated_at: 'y', password_changed_at: 'z' }
    expect(bodyForSave(resource('users'), user)).toEqual({ username: 'lead', roles: ['supervisor'], permissions: [], enabled: true })
  })

  it('names every resource by a field its form has', () => {
    for (const def of RESOURCES) expect(def.fields.some((field) => field.key === def.key), def.kind).toBe(true)
  })
})

describe('roles and pages (one build for every role, FM-13)', () => {
  const info = (roles: string[], agentId: string | null = null): SessionInfo =>
    ({ user: { username: 'u', display_name: '', roles, agent_id: agentId }, tenant: { id: 'demo', name: 'Demo' } }) as SessionInfo

  it('opens the pages a role needs, and lands each user where they work', () => {
    expect(pagesFor(info(['agent'], '8001'))).toEqual(['agent'])
    expect(homeFor(info(['agent'], '8001'))).toBe('/agent')
    expect(pagesFor(info(['team_leader']))).toEqual(['supervisor', 'admin'])
    expect(homeFor(info(['team_leader']))).toBe('/supervisor')
    expect(homeFor(info(['tenant_admin']))).toBe('/admin')
    expect(pagesFor(info(['qa']))).toEqual(['admin'])
    expect(pagesFor(info(['supervisor'], '8009'))).toEqual(['agent', 'supervisor', 'admin'])
    expect(homeFor(null)).toBe('/login')
    expect(pagesFor(info([]))).toEqual([])
  })

  it("follows the permissions the server lists over the roles' defaults", () => {
    const agentWithWallboard = info(['agent'], '8001')
    agentWithWallboard.user.permissions = ['cti.agent', 'cdrs.read', 'live.read', 'numbers.full']
    expect(pagesFor(agentWithWallboard)).toEqual(['agent', 'supervisor'])
    expect(permissionsOf(agentWithWallboard).has('numbers.full')).toBe(true)
    expect(permissionsOf(info(['agent'], '8001')).has('numbers.full')).toBe(false)
  })
})

describe('the two languages', () => {
  it('have the same messages', () => {
    expect(keys(en).sort()).toEqual(keys(zhCN).sort())
  })

  it('use the glossary terms in zh-CN (SPEC §21)', () => {
    const text = JSON.stringify(zhCN)
    for (const term of ['坐席', '工号', '签入', '签出', '示闲', '示忙', '话后处理', '保持', '转接', '全忙', '服务水平', '放弃率', '分机', '租户', '语音留言', '技能组']) {
      expect(text, term).toContain(term)
    }
  })
})
