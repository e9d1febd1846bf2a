// Who this window is on the board (its avatar): a name and a colour. With ?user=NAME the
// name is the user's; otherwise a guest name kept in localStorage, so every tab and reload
// of a browser is the same guest (the tabs of a browser are one member: they share one
// stream).

/** Identity is the presence info the demo sets: { name, color }, plus editing while a task title is being edited. */
export interface Identity {
  readonly name: string;
  readonly color: string;
}

const palette = ["#e91e63", "#3f51b5", "#009688", "#ff9800", "#795548", "#9c27b0", "#2196f3", "#4caf50", "#f44336", "#607d8b"];

/** colorOf picks a colour for name from a fixed palette (the same name, the same colour everywhere). */
export function colorOf(name: string): string {
  let h = 0;
  for (const c of name) h = (h * 31 + c.codePointAt(0)!) >>> 0;
  return palette[h % palette.length];
}

/** initialsOf returns up to two initials of name: "Ada Lovelace" → "AL", "guest-42" → "G4". */
export function initialsOf(name: string): string {
  const words = name.split(/[\s_.-]+/).filter((w) => w !== "");
  const letters = words.length > 1 ? words[0][0] + words[1][0] : name.slice(0, 2);
  return letters.toUpperCase();
}

const guestKey = "actionsync-demo:guest";

/** identityFor returns the window's identity: the user's name, or this browser's guest name. */
export function identityFor(userName: string | undefined, storage: Pick<Storage, "getItem" | "setItem"> | undefined = globalThis.localStorage): Identity {
  let name = userName;
  if (name === undefined) {
    name = storage?.getItem(guestKey) ?? undefined;
    if (!name) {
      name = `Guest ${Math.floor(1000 + Math.random() * 9000)}`;
      storage?.setItem(guestKey, name);
    }
  }
  return { name, color: colorOf(name) };
}
