// The ToDo board: its state, the five synced action types, their creators and the
// reducer. The reducer is pure and deterministic: every id comes from the action's
// payload (the creators make them), so every client that applies the same actions in the
// same order ends with the same board. Payloads arrive from other clients through the
// server, which treats them as opaque, so the reducer checks their shape and ignores
// what it cannot apply instead of throwing. The board also restores itself from
// actionsync/replace: the middleware persists it (store.ts, persist.select).
import { createAction } from "@reduxjs/toolkit";
import { isReplaceAction } from "@actionsync/redux";

/** StageId names one of the board's fixed stages. */
export type StageId = "stage-todo" | "stage-doing" | "stage-done";

/** stageIds lists the stages in board order. */
export const stageIds: readonly StageId[] = ["stage-todo", "stage-doing", "stage-done"];

/** maxTitleLength bounds stage and task titles; longer titles are cut. */
export const maxTitleLength = 200;

/** Stage is one column of the board. */
export interface Stage {
  readonly id: StageId;
  readonly title: string;
}

/** Task is one card; it lives in exactly one stage. */
export interface Task {
  readonly id: string;
  readonly stageId: StageId;
  readonly title: string;
}

/** BoardState is the whole board: stages in board order, tasks in the order they were added. */
export interface BoardState {
  readonly stages: readonly Stage[];
  readonly tasks: readonly Task[];
}

/** BoardActionTypes are the action types the board syncs through actionsync. */
export const BoardActionTypes = {
  updateStageTitle: "UPDATE_STAGE_TITLE",
  addTask: "ADD_TASK",
  renameTask: "RENAME_TASK",
  moveTask: "MOVE_TASK",
  deleteTask: "DELETE_TASK",
} as const;

/** syncedTypes is the `types` list given to the sync middleware. */
export const syncedTypes: string[] = Object.values(BoardActionTypes);

/**
 * The board's actions: RTK action creators (createAction) with the board's wire types,
 * which the server, its allow-lists and every saved board already know. The prepare
 * callbacks make ids and clean titles before dispatching: the reducer stays pure.
 */
export const updateStageTitle = createAction(BoardActionTypes.updateStageTitle, (stageId: StageId, stageTitle: string) => ({
  payload: { stageId, stageTitle: cleanTitle(stageTitle) },
}));

/** addTask adds a task to a stage; taskId defaults to a fresh random UUID. */
export const addTask = createAction(BoardActionTypes.addTask, (stageId: StageId, title: string, taskId: string = newTaskId()) => ({
  payload: { taskId, stageId, title: cleanTitle(title) },
}));

/** renameTask changes a task's title. */
export const renameTask = createAction(BoardActionTypes.renameTask, (taskId: string, title: string) => ({ payload: { taskId, title: cleanTitle(title) } }));

/** moveTask moves a task to another stage (to the end of it). */
export const moveTask = createAction(BoardActionTypes.moveTask, (taskId: string, stageId: StageId) => ({ payload: { taskId, stageId } }));

/** deleteTask removes a task. */
export const deleteTask = createAction(BoardActionTypes.deleteTask, (taskId: string) => ({ payload: { taskId } }));

/** boardActions are the synced action creators: createSync's `actions`. */
export const boardActions = [updateStageTitle, addTask, renameTask, moveTask, deleteTask];

/** BoardAction is any of the board's actions. */
export type BoardAction = ReturnType<(typeof boardActions)[number]>;

/**
 * taskIdOf returns the task an action of the board touches (undefined for a stage title):
 * the demo marks that task "not yet synced" while the action is pending.
 */
export function taskIdOf(action: { type: string; payload?: unknown }): string | undefined {
  const p = action.payload;
  return action.type !== BoardActionTypes.updateStageTitle && isRecord(p) && isTaskId(p.taskId) ? p.taskId : undefined;
}

/**
 * newTaskId returns a random UUID. crypto.randomUUID exists only in secure contexts
 * (https, localhost); on a plain-http LAN address, e.g. the demo opened from a phone,
 * the UUID is made from crypto.getRandomValues.
 */
export function newTaskId(): string {
  if (typeof crypto.randomUUID === "function") return crypto.randomUUID();
  const b = crypto.getRandomValues(new Uint8Array(16));
  b[6] = (b[6] & 0x0f) | 0x40; // version 4
  b[8] = (b[8] & 0x3f) | 0x80; // variant 10
  const h = Array.from(b, (x) => x.toString(16).padStart(2, "0")).join("");
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
}

/** cleanTitle trims a title and cuts it to maxTitleLength characters. */
export function cleanTitle(title: string): string {
  return Array.from(title.trim()).slice(0, maxTitleLength).join("");
}

/** initialBoard is the board before any action: three stages, no task. */
export const initialBoard: BoardState = {
  stages: [
    { id: "stage-todo", title: "To do" },
    { id: "stage-doing", title: "Doing" },
    { id: "stage-done", title: "Done" },
  ],
  tasks: [],
};

/**
 * board is the reducer. Actions that name an unknown stage or task, or whose payload
 * has the wrong shape, leave the state as it is (the same object), as does adding a
 * task id that already exists. actionsync/replace (the persisted board, at start)
 * replaces the board when its state has the board's shape.
 */
export function board(state: BoardState = initialBoard, action: { type: string; payload?: unknown }): BoardState {
  if (isReplaceAction(action)) return isBoardState(action.payload.state) ? action.payload.state : state;
  const p = action.payload;
  switch (action.type) {
    case BoardActionTypes.updateStageTitle: {
      if (!isRecord(p) || !isStageId(p.stageId) || !isTitle(p.stageTitle)) return state;
      const { stageId, stageTitle } = p;
      const title = cleanTitle(stageTitle);
      if (!state.stages.some((s) => s.id === stageId && s.title !== title)) return state;
      return { ...state, stages: state.stages.map((s) => (s.id === stageId ? { ...s, title } : s)) };
    }
    case BoardActionTypes.addTask: {
      if (!isRecord(p) || !isTaskId(p.taskId) || !isStageId(p.stageId) || !isTitle(p.title)) return state;
      const { taskId, stageId, title } = p;
      if (state.tasks.some((t) => t.id === taskId)) return state;
      return { ...state, tasks: [...state.tasks, { id: taskId, stageId, title: cleanTitle(title) }] };
    }
    case BoardActionTypes.renameTask: {
      if (!isRecord(p) || !isTaskId(p.taskId) || !isTitle(p.title)) return state;
      const { taskId } = p;
      const title = cleanTitle(p.title);
      if (!state.tasks.some((t) => t.id === taskId && t.title !== title)) return state;
      return { ...state, tasks: state.tasks.map((t) => (t.id === taskId ? { ...t, title } : t)) };
    }
    case BoardActionTypes.moveTask: {
      if (!isRecord(p) || !isTaskId(p.taskId) || !isStageId(p.stageId)) return state;
      const { taskId, stageId } = p;
      const task = state.tasks.find((t) => t.id === taskId);
      if (task === undefined || task.stageId === stageId) return state;
      return { ...state, tasks: [...state.tasks.filter((t) => t !== task), { ...task, stageId }] };
    }
    case BoardActionTypes.deleteTask: {
      if (!isRecord(p) || !isTaskId(p.taskId)) return state;
      const { taskId } = p;
      if (!state.tasks.some((t) => t.id === taskId)) return state;
      return { ...state, tasks: state.tasks.filter((t) => t.id !== taskId) };
    }
    default:
      return state;
  }
}

/** isBoardState checks the shape of a board restored from storage. */
export function isBoardState(v: unknown): v is BoardState {
  if (!isRecord(v) || !Array.isArray(v.stages) || !Array.isArray(v.tasks)) return false;
  const stagesOk = v.stages.length === stageIds.length && v.stages.every((s, i) => isRecord(s) && s.id === stageIds[i] && isTitle(s.title));
  return stagesOk && v.tasks.every((t) => isRecord(t) && isTaskId(t.id) && isStageId(t.stageId) && typeof t.title === "string");
}

function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

function isStageId(v: unknown): v is StageId {
  return typeof v === "string" && (stageIds as readonly string[]).includes(v);
}

function isTaskId(v: unknown): v is string {
  return typeof v === "string" && v.length > 0 && v.length <= 64;
}

function isTitle(v: unknown): v is string {
  return typeof v === "string" && v.trim() !== "";
}
