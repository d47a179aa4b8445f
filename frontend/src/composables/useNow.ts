import { onBeforeUnmount, ref } from 'vue'
import { serverClock } from '@/utils/time'

/** Server time (ms), refreshed every `intervalMs` while the component lives: drives running timers. */
export function useNow(intervalMs = 1000) {
  const now = ref(serverClock.now())
  const timer = setInterval(() => (now.value = serverClock.now()), intervalMs)
  onBeforeUnmount(() => clearInterval(timer))
  return now
}
