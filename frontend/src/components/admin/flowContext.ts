import type { InjectionKey, Ref } from 'vue'

/** What the node boxes need from the editor around them. */
export interface FlowEditorContext {
  problems: Ref<Record<string, string[]>>
  entry: Ref<string>
  /** A reserved target (`@hangup`) written on an exit that has no connector, for its label. */
  reservedTarget: (nodeId: string, slotKey: string) => string | null
}

export const FLOW_EDITOR: InjectionKey<FlowEditorContext> = Symbol('flow-editor')
