// Who the demo page acts as, when the server requires tokens: ?user=NAME&role=edit|view
// picks a user, and the page gets its tokens from the server's development endpoint
// /demo-token (served with --demo-auth). A real app gets its tokens from its own backend.

/** Role is what a demo user may do: edit (subscribe, publish, history) or view (no publish). */
export type Role = "edit" | "view";

/** DemoUser is the user the page acts as. */
export interface DemoUser {
  readonly name: string;
  readonly role: Role;
}

/** userNamePattern is what the server accepts as a token's sub. */
const userNamePattern = /^[A-Za-z0-9_.-]{1,48}$/;

/**
 * parseUser reads ?user=NAME and ?role=edit|view (default edit): null without a user (the
 * page then sends no token), or a message saying what is wrong.
 */
export function parseUser(params: URLSearchParams): DemoUser | null | { problem: string } {
  const name = params.get("user");
  const role = params.get("role") ?? "edit";
  if (name === null || name === "") {
    return params.has("role") ? { problem: "?role= needs ?user=NAME: who to sign in as." } : null;
  }
  if (!userNamePattern.test(name)) return { problem: `?user=${name} is not a user name: use 1 to 48 of A-Z a-z 0-9 _ . -` };
  if (role !== "edit" && role !== "view") return { problem: `?role=${role} is not a role: use edit or view.` };
  return { name, role };
}

/**
 * demoTokenGetter returns the getToken of the sync middleware for user: each call asks
 * baseUrl's /demo-token for a new token (10 minutes long; the middleware asks again
 * before it expires). It throws with the server's answer when there is no token to be had
 * (a server without --demo-auth answers 404).
 */
export function demoTokenGetter(baseUrl: string, user: DemoUser, fetchFn: typeof fetch = (...a) => fetch(...a)): () => Promise<string> {
  const url = `${baseUrl}/demo-token?${new URLSearchParams({ user: user.name, role: user.role })}`;
  return async () => {
    const res = await fetchFn(url, { cache: "no-store" });
    if (!res.ok) {
      const text = (await res.text()).trim().slice(0, 200);
      throw new Error(`${url}: HTTP ${res.status}${text ? `: ${text}` : ""}`);
    }
    const body = (await res.json()) as { token?: unknown };
    if (typeof body.token !== "string" || body.token === "") throw new Error(`${url}: no token in the answer`);
    return body.token;
  };
}
