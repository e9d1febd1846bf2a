// Unit tests of the board reducer: node --import tsx --test web/demo/src/*.test.ts
import assert from "node:assert/strict";
import { test } from "node:test";
import { ActionTypes } from "@actionsync/redux";
import {
  addTask,
  board,
  cleanTitle,
  deleteTask,
  initialBoard,
  maxTitleLength,
  moveTask,
  newTaskId,
  renameTask,
  syncedTypes,
  updateStageTitle,
  type BoardState,
} from "./board.js";

const apply = (actions: { type: string; payload?: unknown }[], state: BoardState = initialBoard) => actions.reduce(board, state);

test("board_applies_each_action", () => {
  const s = apply([
    updateStageTitle("stage-todo", "Backlog"),
    addTask("stage-todo", "a", "t1"),
    addTask("stage-todo", "b", "t2"),
    renameTask("t1", "a2"),
    moveTask("t1", "stage-done"),
    deleteTask("t2"),
  ]);
  assert.deepEqual(s, {
    stages: [
      { id: "stage-todo", title: "Backlog" },
      { id: "stage-doing", title: "Doing" },
      { id: "stage-done", title: "Done" },
    ],
    tasks: [{ id: "t1", stageId: "stage-done", title: "a2" }],
  });
});

test("board_is_deterministic", () => {
  const actions = [addTask("stage-todo", "a", "t1"), addTask("stage-doing", "b", "t2"), moveTask("t1", "stage-doing")];
  assert.deepEqual(apply(actions), apply(structuredClone(actions)));
  // A move appends to the target stage: the order is the order of the actions.
  assert.deepEqual(
    apply(actions).tasks.map((t) => t.id),
    ["t2", "t1"],
  );
});

test("board_ignores_what_it_cannot_apply", () => {
  const s = apply([addTask("stage-todo", "a", "t1")]);
  const unchanged = [
    addTask("stage-todo", "again", "t1"), // a replayed add: no duplicate
    { type: "ADD_TASK", payload: { taskId: "t9", stageId: "stage-nope", title: "x" } },
    { type: "ADD_TASK", payload: { taskId: "t9", stageId: "stage-todo", title: "   " } },
    { type: "ADD_TASK", payload: { taskId: "", stageId: "stage-todo", title: "x" } },
    { type: "ADD_TASK", payload: "not an object" },
    { type: "ADD_TASK" },
    { type: "RENAME_TASK", payload: { taskId: "missing", title: "x" } },
    { type: "RENAME_TASK", payload: { taskId: "t1", title: 42 } },
    renameTask("t1", "a"), // same title
    moveTask("t1", "stage-todo"), // same stage
    { type: "MOVE_TASK", payload: { taskId: "t1", stageId: "stage-nope" } },
    deleteTask("missing"),
    updateStageTitle("stage-todo", "To do"),
    { type: "UPDATE_STAGE_TITLE", payload: { stageId: "stage-todo", stageTitle: null } },
    { type: "UPDATE_STAGE_TITLE", payload: [] },
    { type: "SOMETHING_ELSE", payload: {} },
  ];
  for (const action of unchanged) {
    assert.equal(board(s, action), s, `${JSON.stringify(action)} changed the state`);
  }
});

test("titles_are_trimmed_and_bounded", () => {
  assert.equal(cleanTitle("  x  "), "x");
  assert.equal(cleanTitle("é".repeat(maxTitleLength + 5)), "é".repeat(maxTitleLength));
  // The reducer cleans remote titles too: another client may send anything.
  const s = board(initialBoard, { type: "UPDATE_STAGE_TITLE", payload: { stageId: "stage-done", stageTitle: ` ${"d".repeat(300)} ` } });
  assert.equal(s.stages[2].title, "d".repeat(maxTitleLength));
});

const uuidV4 = /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/;

test("task_ids_are_uuids", () => {
  const ids = new Set(Array.from({ length: 100 }, () => newTaskId()));
  assert.equal(ids.size, 100);
  for (const id of ids) assert.match(id, uuidV4);
  const action = addTask("stage-todo", "x");
  assert.equal(action.type, "ADD_TASK");
  assert.match((action.payload as { taskId: string }).taskId, /^[0-9a-f-]{36}$/);
});

test("synced_types", () => {
  assert.deepEqual([...syncedTypes].sort(), ["ADD_TASK", "DELETE_TASK", "MOVE_TASK", "RENAME_TASK", "UPDATE_STAGE_TITLE"]);
});

test("task_ids_without_randomUUID", () => {
  // As on an insecure origin (plain http on a LAN address), where randomUUID is missing.
  const c = globalThis.crypto as { randomUUID?: unknown };
  Object.defineProperty(c, "randomUUID", { value: undefined, configurable: true });
  try {
    const ids = new Set(Array.from({ length: 100 }, () => newTaskId()));
    assert.equal(ids.size, 100);
    for (const id of ids) assert.match(id, uuidV4);
  } finally {
    delete c.randomUUID;
  }
  assert.equal(typeof crypto.randomUUID, "function");
});

test("board_restores_itself_from_actionsync_replace", () => {
  const saved = apply([addTask("stage-doing", "kept", "t1")]);
  const replace = (state: unknown) => ({ type: ActionTypes.replace, payload: { channel: "board:x", state, seq: 3, epoch: "e", source: "storage" } });
  assert.deepEqual(board(initialBoard, replace(JSON.parse(JSON.stringify(saved)))), saved);
  // A saved value of another shape leaves the board as it is.
  for (const bad of [null, [], { stages: [], tasks: [] }, { ...saved, tasks: [{ id: "t1" }] }]) {
    assert.equal(board(initialBoard, replace(bad)), initialBoard);
  }
});
