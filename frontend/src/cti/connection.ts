// One CTI connection per browser tab, shared by every page of the application (one build, every role).

import { CtiClient, ctiUrl } from './client'
import { serverClock } from '@/utils/time'

let shared: CtiClient | null = null

export function sharedCti(): CtiClient {
  if (!shared) {
    shared = new CtiClient({ url: ctiUrl() })
    shared.on('*', (event) => serverClock.observe(event.at))
  }
  return shared
}

/** On sign-out: close the socket for good; the next user gets a new connection. */
export function closeSharedCti(): void {
  shared?.close()
  shared = null
}
