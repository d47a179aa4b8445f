// Lists of configuration objects, shared by the admin tables and the choices in their forms.
import { defineStore } from 'pinia'
import { reactive } from 'vue'
import { listAll } from '@/api/http'

export type Item = Record<string, unknown>

export const useConfigStore = defineStore('config', () => {
  const lists = reactive<Record<string, Item[]>>({})
  const loading = reactive<Record<string, boolean>>({})
  const errors = reactive<Record<string, string | null>>({})
  const inflight = new Map<string, Promise<Item[]>>()

  async function load(kind: string, force = false): Promise<Item[]> {
    if (!force && lists[kind]) return lists[kind]
    const running = inflight.get(kind)
    if (running) return running
    loading[kind] = true
    const request = listAll<Item>(`/${kind}`)
      .then((items) => {
        lists[kind] = items
        errors[kind] = null
        return items
      })
      .catch((error: unknown) => {
        errors[kind] = error instanceof Error ? error.message : String(error)
        lists[kind] ??= []
        return lists[kind]
      })
      .finally(() => {
        loading[kind] = false
        inflight.delete(kind)
      })
    inflight.set(kind, request)
    return request
  }

  /** Values of `key` for a select's options, e.g. every queue's name. */
  function keys(kind: string, key: string): string[] {
    return (lists[kind] ?? []).map((item) => String(item[key] ?? '')).filter(Boolean)
  }

  return { lists, loading, errors, load, keys }
})
