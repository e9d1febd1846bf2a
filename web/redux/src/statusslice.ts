// Mounting the status slice beside the app's reducers: a reducer map gets one more key,
// a root reducer function gets its state extended by one key.
import { combineReducers, type Reducer, type ReducersMapObject } from "redux";
import type { SyncStatusState } from "./actions.js";
import { isPlainObject } from "./wire.js";

/**
 * withStatusSlice returns a root reducer whose state is the app's state (from a reducer
 * map or a root reducer function) with the status slice at state[key]. It throws a
 * TypeError, naming the fix, when key is taken by the app's state or the app's root state
 * is not an object.
 */
export function withStatusSlice(app: Reducer | ReducersMapObject, key: string, status: Reducer<SyncStatusState>): Reducer {
  if (typeof app === "function") return extend(app, key, status);
  if (!isPlainObject(app)) throw new TypeError("actionsync: sync.reducer(...) takes a root reducer function or a map of slice reducers, as configureStore's reducer does");
  if (Object.hasOwn(app, key)) {
    throw new TypeError(`actionsync: the reducer map has a "${key}" key already; the status slice goes there: give createSync another statusKey`);
  }
  return combineReducers({ ...(app as ReducersMapObject), [key]: status });
}

/**
 * extend adds the status slice to the state of a root reducer function. The app's reducer
 * gets its own state without the key (combineReducers would warn about the unknown key and
 * rebuild its state each time), remembered per extended state so as not to copy it again.
 */
function extend(app: Reducer, key: string, status: Reducer<SyncStatusState>): Reducer {
  const inner = new WeakMap<object, unknown>();
  return (state: Record<string, unknown> | undefined, action) => {
    let prevApp: unknown;
    if (state !== undefined) {
      prevApp = inner.get(state);
      if (prevApp === undefined) {
        const { [key]: _, ...rest } = state;
        prevApp = rest;
      }
    }
    const prevStatus = state?.[key] as SyncStatusState | undefined;
    const nextApp = app(prevApp, action);
    if (!isPlainObject(nextApp)) {
      throw new TypeError(`actionsync: the root reducer's state must be a plain object to hold the status slice at state.${key}; got ${typeof nextApp}`);
    }
    if (Object.hasOwn(nextApp, key)) {
      throw new TypeError(`actionsync: the root reducer's state has a "${key}" key already; the status slice goes there: give createSync another statusKey`);
    }
    const nextStatus = status(prevStatus, action);
    if (state !== undefined && nextApp === prevApp && nextStatus === prevStatus) return state;
    const out = { ...nextApp, [key]: nextStatus };
    inner.set(out, nextApp);
    return out;
  };
}
