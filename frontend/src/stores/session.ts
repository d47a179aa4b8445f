// Who is signed in, to which tenant, with which roles; which pages that opens (FM-13: one build, the
// role decides what shows).

import { defineStore } from 'pinia'
import { computed, ref } from 'vue'
import { api, ApiError } from '@/api/http'
import type { Permission, Role, SessionInfo } from '@/api/types'
import { closeSharedCti } from '@/cti/connection'

export type Page = 'agent' | 'supervisor' | 'admin'

const SUPERVISION: Permission[] = ['config.read', 'live.read', 'agents.control', 'monitor', 'cdrs.read', 'recordings.listen', 'cti.agent']
const EVERYTHING: Permission[] = [...SUPERVISION, 'config.write', 'users.manage', 'audit.read', 'numbers.full', 'export']
/** The roles' permissions, as the server grants them; used only when a session does not list them. */
const ROLE_PERMISSIONS: Record<Role, Permission[]> = {
  platform_admin: EVERYTHING,
  tenant_admin: EVERYTHING,
  supervisor: [...SUPERVISION, 'export'],
  team_leader: SUPERVISION,
  qa: ['config.read', 'cdrs.read', 'recordings.listen'],
  agent: ['cti.agent', 'cdrs.read'],
}

export function permissionsOf(info: SessionInfo | null): Set<Permission> {
  if (!info) return new Set()
  if (Array.isArray(info.user.permissions)) return new Set(info.user.permissions)
  return new Set((info.user.roles ?? []).flatMap((role) => ROLE_PERMISSIONS[role] ?? []))
}

export function pagesFor(info: SessionInfo | null): Page[] {
  if (!info) return []
  const can = permissionsOf(info)
  const pages: Page[] = []
  if (info.user.agent_id) pages.push('agent')
  if (can.has('live.read')) pages.push('supervisor')
  // Whoever may read the configuration sees the console; only config.write changes it.
  if (can.has('config.read')) pages.push('admin')
  return pages
}

/** Where a user lands after signing in: agents at their desk, supervisors at the wallboard, admins (who
 * supervise nothing) in the console. */
export function homeFor(info: SessionInfo | null): string {
  const pages = pagesFor(info)
  if (!info || !pages.length) return '/login'
  if (pages.includes('agent')) return '/agent'
  const roles = info.user.roles ?? []
  if (pages.includes('supervisor') && roles.some((role) => role === 'supervisor' || role === 'team_leader')) return '/supervisor'
  if (pages.includes('admin')) return '/admin'
  return `/${pages[0]}`
}

export const useSessionStore = defineStore('session', () => {
  const info = ref<SessionInfo | null>(null)
  const checked = ref(false)

  const pages = computed(() => pagesFor(info.value))
  const roles = computed<Role[]>(() => info.value?.user.roles ?? [])
  const permissions = computed(() => permissionsOf(info.value))
  const can = (permission: Permission) => permissions.value.has(permission)
  const isAdmin = computed(() => can('config.write'))
  const mayViewFullNumbers = computed(() => can('numbers.full'))
  const home = computed(() => homeFor(info.value))

  async function load(): Promise<SessionInfo | null> {
    try {
      info.value = await api.get<SessionInfo>('/session')
    } catch (error) {
      if (!(error instanceof ApiError) || (error.status !== 401 && error.status !== 403 && error.status !== 404)) {
        checked.value = true
        throw error
      }
      info.value = null
    }
    checked.value = true
    return info.value
  }

  async function login(tenant: string, username: string, password: string): Promise<SessionInfo> {
    const result = await api.post<SessionInfo>('/session', { tenant, username, password })
    info.value = result
    checked.value = true
    return result
  }

  async function logout(): Promise<void> {
    closeSharedCti()
    try {
      await api.delete('/session')
    } finally {
      info.value = null
    }
  }

  function forget(): void {
    closeSharedCti()
    info.value = null
  }

  return { info, checked, pages, roles, permissions, can, isAdmin, mayViewFullNumbers, home, load, login, logout, forget }
})
