import { ElMessage } from 'element-plus'
import { useI18n } from 'vue-i18n'
import { actionErrorText } from '@/utils/errors'

/** Runs a user action; a failure is shown in words, never swallowed (FM-05). */
export function useAction() {
  const { t } = useI18n()
  return async function act<T>(run: () => Promise<T>, success?: string): Promise<T | undefined> {
    try {
      const result = await run()
      if (success) ElMessage.success({ message: success, grouping: true })
      return result
    } catch (failure) {
      ElMessage.error({ message: actionErrorText(failure, t), grouping: true, duration: 6000 })
      return undefined
    }
  }
}
