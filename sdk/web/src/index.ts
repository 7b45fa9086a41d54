export { InteractionLogger, MAX_BODY_BYTES } from './logger.js';
export type {
  Device,
  DropReason,
  ItemError,
  LoggerError,
  LoggerOptions,
  LoggerStats,
  TrackEvent,
} from './logger.js';
export { ACTIONS } from './actions.js';
export type { Action, ActionHelpers, CamelCase, HelperExtra, Interaction } from './actions.js';
export { MAX_UNLOAD_BODY_BYTES } from './batch.js';
export { uuidv7 } from './uuid.js';
