// @actionsync/redux/react: React hooks over a synced store (react-redux's Provider).
// This file only re-exports them.
export { usePending, useSyncStatus } from "./hooks.js";
export type { SyncView } from "./hooks.js";
