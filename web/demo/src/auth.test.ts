// Unit tests of the demo's sign-in: node --import tsx --test web/demo/src/*.test.ts
import assert from "node:assert/strict";
import { test } from "node:test";
import { demoTokenGetter, parseUser } from "./auth.js";

test("parse_user_reads_user_and_role", () => {
  const parse = (q: string) => parseUser(new URLSearchParams(q));
  assert.equal(parse("board=x"), null, "no user: no token");
  assert.deepEqual(parse("user=alice"), { name: "alice", role: "edit" });
  assert.deepEqual(parse("user=bob&role=view"), { name: "bob", role: "view" });
  assert.deepEqual(parse("user=bob&role=edit"), { name: "bob", role: "edit" });
  assert.match((parse("user=bob&role=admin") as { problem: string }).problem, /not a role/);
  assert.match((parse("user=a:b") as { problem: string }).problem, /not a user name/);
  assert.match((parse(`user=${"x".repeat(49)}`) as { problem: string }).problem, /not a user name/);
  assert.match((parse("role=view") as { problem: string }).problem, /needs \?user/);
});

test("demo_token_getter_asks_the_server_each_time", async () => {
  const asked: string[] = [];
  let answer = () => new Response(JSON.stringify({ token: `t${asked.length}`, expires: "2026-12-01T10:00:00Z" }), { status: 200 });
  const fakeFetch = (async (url: string | URL | Request) => {
    asked.push(String(url));
    return answer();
  }) as typeof fetch;
  const getToken = demoTokenGetter("http://localhost:8080", { name: "bob", role: "view" }, fakeFetch);
  assert.equal(await getToken(), "t1");
  assert.equal(await getToken(), "t2");
  assert.deepEqual(asked, ["http://localhost:8080/demo-token?user=bob&role=view", "http://localhost:8080/demo-token?user=bob&role=view"]);
  answer = () => new Response("404 page not found\n", { status: 404 });
  await assert.rejects(getToken(), /demo-token\?user=bob&role=view: HTTP 404: 404 page not found$/);
  answer = () => new Response("{}", { status: 200 });
  await assert.rejects(getToken(), /no token in the answer/);
});
