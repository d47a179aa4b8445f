// Routes; a role decides which pages open (FM-13: one build for every role).
import { createRouter, createWebHistory, type RouteLocationNormalized } from 'vue-router'
import { onUnauthorized } from '@/api/http'
import { type Page, useSessionStore } from '@/stores/session'

declare module 'vue-router' {
  interface RouteMeta {
    page?: Page
    bare?: boolean
  }
}

export const router = createRouter({
  history: createWebHistory('/'),
  routes: [
    { path: '/', name: 'home', component: { render: () => null } },
    { path: '/login', name: 'login', component: () => import('@/views/LoginView.vue'), meta: { bare: true } },
    { path: '/agent', name: 'agent', component: () => import('@/views/AgentView.vue'), meta: { page: 'agent' } },
    { path: '/supervisor', name: 'supervisor', component: () => import('@/views/SupervisorView.vue'), meta: { page: 'supervisor' } },
    { path: '/wallboard', name: 'wallboard', component: () => import('@/views/WallboardView.vue'), meta: { page: 'supervisor', bare: true } },
    { path: '/admin', name: 'admin', component: () => import('@/views/AdminView.vue'), meta: { page: 'admin' } },
    { path: '/:rest(.*)*', redirect: '/' },
  ],
})

router.beforeEach(async (to: RouteLocationNormalized) => {
  const session = useSessionStore()
  if (!session.checked) {
    try {
      await session.load()
    } catch {
      // The server is unreachable: the sign-in page says so when it is used.
    }
  }
  if (to.name === 'login') return session.info && !to.query.expired ? session.home : true
  if (!session.info) return { name: 'login', query: to.fullPath !== '/' ? { redirect: to.fullPath } : {} }
  if (to.name === 'home') return session.home
  if (to.meta.page && !session.pages.includes(to.meta.page)) return session.home
  return true
})

onUnauthorized(() => {
  const session = useSessionStore()
  if (!session.info) return
  session.forget()
  void router.push({ name: 'login', query: { expired: '1' } })
})
