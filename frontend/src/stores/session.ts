// Who is signed in, to which tenant, with which roles; which pages that opens (FM-13: one build, the
// role decides what shows).

import { defineStore } from 'pinia'
import { computed, ref } from 'vue'
import { api, ApiError } from '@/api/http'
import type { Role, SessionInfo } from '@/api/types'
import { closeSharedCti } from '@/cti/connection'

export const SUPERVISOR_ROLES: Role[] = ['platform_admin', 'tenant_admin', 'supervisor', 'team_leader', 'qa']
export const ADMIN_ROLES: Role[] = ['platform_admin', 'tenant_admin']
// Roles that may see callers' full numbers when the server sends them (the server masks for the rest).
export const FULL_NUMBER_ROLES: Role[] = ['platform_admin', 'tenant_admin', 'supervisor']

export type Page = 'agent' | 'supervisor' | 'admin'

export function pagesFor(info: SessionInfo | null): Page[] {
  if (!info) return []
  const roles = info.user.roles ?? []
  const pages: Page[] = []
  if (info.user.agent_id || roles.includes('agent')) pages.push('agent')
  if (roles.some((role) => SUPERVISOR_ROLES.includes(role))) pages.push('supervisor')
  // Supervisors read the configuration (docs/cti.md); only admins change it.
  if (roles.some((role) => ADMIN_ROLES.includes(role) || role === 'supervisor')) pages.push('admin')
  return pages
}

/** Where a user lands after signing in: agents at their desk, supervisors at the wallboard, admins
 * (who supervise nothing) in the console. */
export function homeFor(info: SessionInfo | null): string {
  const pages = pagesFor(info)
  if (!info || !pages.length) return '/login'
  if (pages.includes('agent')) return '/agent'
  const roles = info.user.roles ?? []
  if (roles.some((role) => role === 'supervisor' || role === 'team_leader' || role === 'qa')) return '/supervisor'
  if (pages.includes('admin')) return '/admin'
  return `/${pages[0]}`
}

export const useSessionStore = defineStore('session', () => {
  const info = ref<SessionInfo | null>(null)
  const checked = ref(false)

  const pages = computed(() => pagesFor(info.value))
  const roles = computed<Role[]>(() => info.value?.user.roles ?? [])
  const isAdmin = computed(() => roles.value.some((role) => ADMIN_ROLES.includes(role)))
  const mayViewFullNumbers = computed(() => roles.value.some((role) => FULL_NUMBER_ROLES.includes(role)))
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

  return { info, checked, pages, roles, isAdmin, mayViewFullNumbers, home, load, login, logout, forget }
})
