// Failures in words for the user (FM-05: the client shows any failure).
import { ApiError } from '@/api/http'
import { CtiCommandError, CtiDisconnectedError, CtiTimeoutError } from '@/cti/client'
import { MediaError } from '@/softphone/media'

type Translate = (key: string, values?: Record<string, unknown>) => string

export function loginErrorText(failure: unknown, t: Translate): string {
  if (failure instanceof ApiError) {
    if (failure.status === 423 || failure.code === 'locked') return t('login.errors.locked')
    if (failure.status === 401 || failure.code === 'bad_credentials') return t('login.errors.bad_credentials')
    if (failure.code === 'network') return t('login.errors.network')
    if (failure.code === 'timeout') return t('login.errors.timeout')
    return t('login.errors.unknown', { message: failure.message })
  }
  return t('login.errors.unknown', { message: failure instanceof Error ? failure.message : String(failure) })
}

export function actionErrorText(failure: unknown, t: Translate): string {
  if (failure instanceof MediaError) return t(`agent.media.errors.${failure.code}`, { message: failure.message })
  if (failure instanceof CtiTimeoutError) return t('agent.errors.timeout')
  if (failure instanceof CtiDisconnectedError) {
    return failure.code === 'not_connected' ? t('agent.errors.not_connected') : t('agent.errors.disconnected')
  }
  if (failure instanceof CtiCommandError || failure instanceof ApiError) return t('agent.errors.failed', { message: failure.message })
  return t('agent.errors.failed', { message: failure instanceof Error ? failure.message : String(failure) })
}
