// @actionsync/redux/react: React hooks over a synced store (react-redux's Provider).
// This file only re-exports them.
export { usePending, usePresence, useSyncStatus } from "./hooks.js";
export type { PresenceView, SyncView } from "./hooks.js";
