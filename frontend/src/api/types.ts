// Shapes of the server's JSON (docs/cti.md). Fields the server may leave out are optional.

export type Role = 'platform_admin' | 'tenant_admin' | 'supervisor' | 'team_leader' | 'qa' | 'agent'

export type Permission =
  | 'config.read'
  | 'config.write'
  | 'users.manage'
  | 'audit.read'
  | 'live.read'
  | 'agents.control'
  | 'monitor'
  | 'cdrs.read'
  | 'numbers.full'
  | 'recordings.listen'
  | 'export'
  | 'cti.agent'

export interface SessionUser {
  username: string
  display_name: string
  roles: Role[]
  agent_id: string | null
  /** The user's effective permissions (roles' and granted ones). */
  permissions?: Permission[]
  data_scope?: 'all' | 'department' | 'self'
  department?: string | null
  must_change_password?: boolean
}

export interface SessionInfo {
  user: SessionUser
  tenant: { id: string; name: string }
}

export type AgentState =
  | 'logged_out'
  | 'ready'
  | 'not_ready'
  | 'reserved'
  | 'ringing'
  | 'on_call'
  | 'on_hold'
  | 'wrap_up'
  | 'outbound'

export const AGENT_STATES: AgentState[] = [
  'logged_out',
  'ready',
  'not_ready',
  'reserved',
  'ringing',
  'on_call',
  'on_hold',
  'wrap_up',
  'outbound',
]

export interface WallboardAgent {
  agent_id: string
  name?: string
  state: AgentState
  reason?: string | null
  since?: string | null
  call_id?: string | null
  queue?: string | null
  ani_masked?: string | null
  device?: string | null
}

export interface WallboardQueue {
  queue: string
  name?: string
  waiting: number
  longest_wait_seconds: number
  agents_ready?: number
  agents_not_ready?: number
  agents_on_call?: number
  offered_today: number
  answered_today: number
  abandoned_today: number
  service_level_today: number | null
  abandon_rate_today: number | null
}

export interface WallboardTrunk {
  name: string
  channels_in_use: number
  channel_limit: number | null
}

export interface WallboardSnapshot {
  agents: WallboardAgent[]
  queues: WallboardQueue[]
  trunks?: WallboardTrunk[]
}

export interface ReasonCode {
  code: string
  name: string
  name_en?: string
  kind?: 'not_ready' | 'disposition'
  max_minutes?: number | null
}
