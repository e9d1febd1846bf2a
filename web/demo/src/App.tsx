// The board's user interface. Every change goes through a board action; the components
// hold no board state of their own, only the text of a title being edited.
import { useRef, useState, type FormEvent, type KeyboardEvent } from "react";
import { useDispatch, useSelector } from "react-redux";
import {
  addTask,
  cleanTitle,
  deleteTask,
  maxTitleLength,
  moveTask,
  renameTask,
  updateStageTitle,
  type Stage,
  type StageId,
  type Task,
} from "./board.js";
import type { DemoUser } from "./auth.js";
import { dismissRejected, dismissReset } from "./notices.js";
import type { AppDispatch, RootState } from "./store.js";

const useAppDispatch = useDispatch.withTypes<AppDispatch>();
const useAppSelector = useSelector.withTypes<RootState>();

/** App is the whole page: header, notices and the board; user is who it acts as, if anyone. */
export function App({ boardName, user = null }: { boardName: string; user?: DemoUser | null }) {
  return (
    <>
      <header className="bar">
        <h1>
          ToDo board <span className="board-name">{boardName}</span>
        </h1>
        {user && (
          <span className="user">
            signed in as <strong data-testid="user-name">{user.name}</strong> <span data-testid="user-role">({user.role})</span>
          </span>
        )}
        <SyncStatus />
      </header>
      {user?.role === "view" && (
        <div className="notice notice-readonly" role="status" data-testid="read-only-notice">
          <span>Read-only: {user.name} may view this board but not change it. The server refuses edits, and they are rolled back.</span>
        </div>
      )}
      <Notices />
      <Board />
      <footer className="hint">
        Open this page in another window: both stay in sync. <code>?board=NAME</code> picks another board.
      </footer>
    </>
  );
}

function SyncStatus() {
  const sync = useAppSelector((s) => s.sync);
  return (
    <div className="sync" aria-live="polite">
      <span className={`status status-${sync.status}`} data-testid="connection-status" title={sync.error?.message}>
        {sync.status}
      </span>
      <span className="pending">
        pending <span data-testid="pending-count">{sync.pending}</span>
      </span>
      <span className="seq">
        seq <span data-testid="last-seq">{sync.lastSeq}</span>
      </span>
      {sync.error?.code === "unauthenticated" && (
        <span className="auth-problem" data-testid="auth-error">
          not signed in: {sync.error.message}
        </span>
      )}
    </div>
  );
}

function Notices() {
  const { reset, rejected } = useAppSelector((s) => s.notices);
  const dispatch = useAppDispatch();
  return (
    <>
      {reset && (
        <div className="notice notice-reset" role="status" data-testid="sync-reset">
          <span>
            The server's history was reset (it restarted or dropped old actions; now at seq {reset.headSeq}): this board may differ from other windows.
          </span>
          <button type="button" onClick={() => dispatch(dismissReset())}>
            Dismiss
          </button>
        </div>
      )}
      {rejected && (
        <div className="notice notice-error" role="alert" data-testid="sync-error">
          <span>
            The server refused {rejected.type}: {rejected.code}: {rejected.message}
          </span>
          <button type="button" onClick={() => dispatch(dismissRejected())}>
            Dismiss
          </button>
        </div>
      )}
    </>
  );
}

function Board() {
  const stages = useAppSelector((s) => s.board.stages);
  const tasks = useAppSelector((s) => s.board.tasks);
  return (
    <main className="board">
      {stages.map((stage) => (
        <StageColumn key={stage.id} stage={stage} stages={stages} tasks={tasks.filter((t) => t.stageId === stage.id)} />
      ))}
    </main>
  );
}

function StageColumn({ stage, stages, tasks }: { stage: Stage; stages: readonly Stage[]; tasks: readonly Task[] }) {
  const dispatch = useAppDispatch();
  const [newTitle, setNewTitle] = useState("");
  const add = (e: FormEvent) => {
    e.preventDefault();
    if (newTitle.trim() === "") return;
    dispatch(addTask(stage.id, newTitle));
    setNewTitle("");
  };
  return (
    <section className="stage" data-testid={stage.id}>
      <EditableTitle
        className="stage-title"
        value={stage.title}
        label="Stage title"
        testId={`stage-title-${stage.id}`}
        onCommit={(title) => dispatch(updateStageTitle(stage.id, title))}
      />
      <ul className="tasks">
        {tasks.map((task) => (
          <TaskCard key={task.id} task={task} stages={stages} />
        ))}
      </ul>
      <form className="add-task" onSubmit={add}>
        <input
          value={newTitle}
          onChange={(e) => setNewTitle(e.target.value)}
          placeholder="New task"
          maxLength={maxTitleLength}
          aria-label={`New task in ${stage.title}`}
          data-testid={`new-task-${stage.id}`}
        />
        <button type="submit" data-testid={`add-task-${stage.id}`}>
          Add
        </button>
      </form>
    </section>
  );
}

function TaskCard({ task, stages }: { task: Task; stages: readonly Stage[] }) {
  const dispatch = useAppDispatch();
  return (
    <li className="task" data-testid={`task-${task.id}`}>
      <EditableTitle
        className="task-title"
        value={task.title}
        label="Task title"
        testId={`task-title-${task.id}`}
        onCommit={(title) => dispatch(renameTask(task.id, title))}
      />
      <div className="task-controls">
        <select
          value={task.stageId}
          onChange={(e) => dispatch(moveTask(task.id, e.target.value as StageId))}
          aria-label="Move to stage"
          data-testid={`task-move-${task.id}`}
        >
          {stages.map((s) => (
            <option key={s.id} value={s.id}>
              {s.title}
            </option>
          ))}
        </select>
        <button
          type="button"
          className="delete"
          onClick={() => dispatch(deleteTask(task.id))}
          aria-label="Delete task"
          title="Delete task"
          data-testid={`task-delete-${task.id}`}
        >
          ×
        </button>
      </div>
    </li>
  );
}

/**
 * EditableTitle is an input that shows value while not focused and commits the edited
 * text on blur (Enter blurs, Escape cancels), only if it changed and is not blank.
 */
function EditableTitle(props: {
  value: string;
  label: string;
  testId: string;
  className: string;
  onCommit: (title: string) => void;
}) {
  const { value, onCommit } = props;
  // draft is the text being edited; null while not focused, so remote changes show.
  const [draft, setDraft] = useState<string | null>(null);
  const cancelled = useRef(false);
  const onKeyDown = (e: KeyboardEvent<HTMLInputElement>) => {
    if (e.key === "Enter") {
      e.currentTarget.blur();
    } else if (e.key === "Escape") {
      cancelled.current = true;
      e.currentTarget.blur();
    }
  };
  return (
    <input
      className={props.className}
      value={draft ?? value}
      maxLength={maxTitleLength}
      aria-label={props.label}
      data-testid={props.testId}
      onFocus={() => {
        cancelled.current = false;
        setDraft(value);
      }}
      onChange={(e) => setDraft(e.target.value)}
      onKeyDown={onKeyDown}
      onBlur={(e) => {
        const title = cleanTitle(e.currentTarget.value);
        setDraft(null);
        if (!cancelled.current && title !== "" && title !== value) onCommit(title);
      }}
    />
  );
}
