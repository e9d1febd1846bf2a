// The board's user interface. Every change goes through a board action; the components
// hold no board state of their own, only the text of a title being edited.
import { useCallback, useMemo, useRef, useState, type FormEvent, type KeyboardEvent } from "react";
import { useDispatch, useSelector } from "react-redux";
import { usePending, usePresence, useSyncStatus } from "@actionsync/redux/react";
import type { PresenceMember } from "@actionsync/redux";
import {
  addTask,
  cleanTitle,
  deleteTask,
  maxTitleLength,
  moveTask,
  renameTask,
  taskIdOf,
  updateStageTitle,
  type Stage,
  type StageId,
  type Task,
} from "./board.js";
import type { DemoUser } from "./auth.js";
import { dismissRejected, dismissReset } from "./notices.js";
import type { DemoLink } from "./link.js";
import { initialsOf, type Identity } from "./presence.js";
import type { AppDispatch, BoardSync, RootState } from "./store.js";

const useAppDispatch = useDispatch.withTypes<AppDispatch>();
const useAppSelector = useSelector.withTypes<RootState>();

/** AppProps: the board shown, who the page acts as (if anyone), its sync instance, link and avatar. */
export interface AppProps {
  boardName: string;
  user?: DemoUser | null;
  sync: BoardSync;
  link: DemoLink;
  identity: Identity;
}

/** App is the whole page: header, notices and the board. */
export function App({ boardName, user = null, sync, link, identity }: AppProps) {
  return (
    <>
      <header className="bar">
        <h1>
          ToDo board <span className="board-name" data-testid="board-name">{boardName}</span>
        </h1>
        {user && (
          <span className="user">
            signed in as <strong data-testid="user-name">{user.name}</strong> <span data-testid="user-role">({user.role})</span>
          </span>
        )}
        <Avatars sync={sync} />
        <SyncStatus sync={sync} link={link} />
      </header>
      <BoardPicker boardName={boardName} />
      {user?.role === "view" && (
        <div className="notice notice-readonly" role="status" data-testid="read-only-notice">
          <span>Read-only: {user.name} may view this board but not change it. The server refuses edits, and they are rolled back.</span>
        </div>
      )}
      <Notices />
      <Board sync={sync} identity={identity} />
      <footer className="hint">
        Open the link in another window, browser or device: every window on this board stays in sync. Switch <em>Work offline</em> on,
        edit, and switch it off: the edits marked <em>not yet synced</em> are sent then.
      </footer>
    </>
  );
}

/**
 * BoardPicker opens another board (keeping the page's other parameters) and shows this
 * board's link to share.
 */
function BoardPicker({ boardName }: { boardName: string }) {
  const [name, setName] = useState(boardName);
  const [copied, setCopied] = useState(false);
  const open = (e: FormEvent) => {
    e.preventDefault();
    const params = new URLSearchParams(location.search);
    params.set("board", name.trim() || "main");
    location.search = params.toString();
  };
  const copy = () => {
    navigator.clipboard?.writeText(location.href).then(
      () => setCopied(true),
      () => setCopied(false),
    );
  };
  return (
    <nav className="picker">
      <form onSubmit={open}>
        <label>
          Board <input value={name} onChange={(e) => setName(e.target.value)} maxLength={122} pattern="[A-Za-z0-9_.:\-]+" data-testid="board-picker" />
        </label>
        <button type="submit" data-testid="board-open">
          Open
        </button>
      </form>
      <label className="share">
        Share this board: <input readOnly value={location.href} onFocus={(e) => e.currentTarget.select()} data-testid="share-link" />
      </label>
      <button type="button" onClick={copy} data-testid="share-copy">
        {copied ? "Copied" : "Copy link"}
      </button>
    </nav>
  );
}

/** SyncStatus shows the connection, what is pending, the last error in words, and the offline switch. */
function SyncStatus({ sync, link }: { sync: BoardSync; link: DemoLink }) {
  const status = useSyncStatus(sync);
  const [offline, setOffline] = useState(link.offline);
  return (
    <div className="sync" aria-live="polite">
      <span className={`status status-${status.status}`} data-testid="connection-status">
        {status.status}
      </span>
      <span className="pending">
        pending <span data-testid="pending-count">{status.pending}</span>
      </span>
      <span className="seq">
        seq <span data-testid="last-seq">{status.lastSeq}</span>
      </span>
      <label className="offline-switch">
        <input
          type="checkbox"
          checked={offline}
          onChange={(e) => {
            link.setOffline(e.target.checked);
            setOffline(e.target.checked);
          }}
          data-testid="offline-toggle"
        />{" "}
        Work offline
      </label>
      {status.error &&
        (status.error.code === "unauthenticated" ? (
          <span className="auth-problem" data-testid="auth-error">
            not signed in: {status.error.message}
          </span>
        ) : (
          <span className="sync-error" role="status" data-testid="connection-error">
            {status.error.code}: {status.error.message}
          </span>
        ))}
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
            Reload to show what the server has.
          </span>
          <button type="button" onClick={() => location.reload()} data-testid="reset-reload">
            Reload
          </button>
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

/** Avatars shows who is on the board: initials on their colour, this window's outlined. */
function Avatars({ sync }: { sync: BoardSync }) {
  const { members, count, self } = usePresence(sync);
  return (
    <ul className="avatars" aria-label="Who is on this board" data-testid="avatars">
      {members.map((m) => (
        <li
          key={m.clientId}
          className={m.clientId === self ? "avatar avatar-self" : "avatar"}
          style={{ background: colorIn(m) }}
          title={m.clientId === self ? `${nameIn(m)} (you)` : nameIn(m)}
          data-testid="avatar"
          data-name={nameIn(m)}
          data-self={m.clientId === self ? "true" : undefined}
        >
          {initialsOf(nameIn(m))}
        </li>
      ))}
      {count > members.length && <li className="avatar avatar-more">+{count - members.length}</li>}
    </ul>
  );
}

const nameIn = (m: PresenceMember) => (typeof m.info.name === "string" && m.info.name !== "" ? m.info.name : m.clientId);
const colorIn = (m: PresenceMember) => (typeof m.info.color === "string" && /^#[0-9a-f]{6}$/i.test(m.info.color) ? m.info.color : "#607d8b");

/** Editing is what a task card needs for presence: who else edits it, and how to say this window does. */
interface Editing {
  /** editors lists, by task id, the other members editing that task's title. */
  editors: ReadonlyMap<string, readonly PresenceMember[]>;
  /** setEditing tells the others this window edits taskId's title (null: none). */
  setEditing(taskId: string | null): void;
}

function Board({ sync, identity }: { sync: BoardSync; identity: Identity }) {
  const stages = useAppSelector((s) => s.board.stages);
  const tasks = useAppSelector((s) => s.board.tasks);
  // The tasks that local actions not yet confirmed by the server touch.
  const pending = usePending(sync);
  const unsynced = useMemo(() => new Set(pending.map(taskIdOf).filter((id) => id !== undefined)), [pending]);
  const { others } = usePresence(sync);
  const setEditing = useCallback((taskId: string | null) => sync.setPresence(taskId === null ? { ...identity } : { ...identity, editing: taskId }), [sync, identity]);
  const editing = useMemo<Editing>(() => {
    const editors = new Map<string, PresenceMember[]>();
    for (const m of others) {
      if (typeof m.info.editing === "string") editors.set(m.info.editing, [...(editors.get(m.info.editing) ?? []), m]);
    }
    return { editors, setEditing };
  }, [others, setEditing]);
  return (
    <main className="board">
      {stages.map((stage) => (
        <StageColumn key={stage.id} stage={stage} stages={stages} tasks={tasks.filter((t) => t.stageId === stage.id)} unsynced={unsynced} editing={editing} />
      ))}
    </main>
  );
}

function StageColumn({
  stage,
  stages,
  tasks,
  unsynced,
  editing,
}: {
  stage: Stage;
  stages: readonly Stage[];
  tasks: readonly Task[];
  unsynced: ReadonlySet<string>;
  editing: Editing;
}) {
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
          <TaskCard key={task.id} task={task} stages={stages} unsynced={unsynced.has(task.id)} editors={editing.editors.get(task.id)} setEditing={editing.setEditing} />
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

function TaskCard({
  task,
  stages,
  unsynced,
  editors,
  setEditing,
}: {
  task: Task;
  stages: readonly Stage[];
  unsynced: boolean;
  editors: readonly PresenceMember[] | undefined;
  setEditing: (taskId: string | null) => void;
}) {
  const dispatch = useAppDispatch();
  const classes = ["task", unsynced && "task-unsynced", editors && "task-editing"].filter(Boolean).join(" ");
  return (
    <li className={classes} data-testid={`task-${task.id}`} style={editors ? { borderColor: colorIn(editors[0]) } : undefined}>
      {unsynced && (
        <span className="unsynced" data-testid={`unsynced-${task.id}`} title="This change has not reached the server yet">
          not yet synced
        </span>
      )}
      {editors && (
        <span className="editing" data-testid={`editing-${task.id}`} style={{ background: colorIn(editors[0]) }}>
          {editors.map(nameIn).join(", ")} {editors.length > 1 ? "are" : "is"} editing
        </span>
      )}
      <EditableTitle
        className="task-title"
        value={task.title}
        label="Task title"
        testId={`task-title-${task.id}`}
        onCommit={(title) => dispatch(renameTask(task.id, title))}
        onEditing={(on) => setEditing(on ? task.id : null)}
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
  /** onEditing is told when editing starts (focus) and ends (blur). */
  onEditing?: (editing: boolean) => void;
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
        props.onEditing?.(true);
      }}
      onChange={(e) => setDraft(e.target.value)}
      onKeyDown={onKeyDown}
      onBlur={(e) => {
        const title = cleanTitle(e.currentTarget.value);
        setDraft(null);
        props.onEditing?.(false);
        if (!cancelled.current && title !== "" && title !== value) onCommit(title);
      }}
    />
  );
}
