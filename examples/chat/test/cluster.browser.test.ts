/**
 * The demo scaled, in a real browser (issue 17): `node examples/chat/cluster.mjs` — two chat
 * instances behind nginx (round robin, no sticky sessions) with a redis-server of its own — and
 * Debian's chromium driven by playwright-core. Users on different instances chat with each other;
 * a logout on one instance closes the user's page on the other. Needs chromium, nginx and
 * redis-server (.ci/run installs them). Screenshots of a failed step go to test-results/browser/.
 */
import type { Browser, Page } from 'playwright-core';
import WebSocket from 'ws';
import { build } from './demo';
import { launchChromium, openFeed, step as shot, startCluster, type Cluster, type Feed } from './suites';

const WAIT = 10_000;

let cluster: Cluster;
let origin = '';
let browser: Browser;
let feed: Feed | undefined;
let events: Array<Record<string, unknown>> = [];
const pages = new Map<string, Page>();

beforeAll(async () => {
  build();
  cluster = await startCluster();
  origin = `http://127.0.0.1:${cluster.port}`;
  browser = await launchChromium();
  // One admin feed (on whichever instance nginx picks) sees the events of both.
  feed = await openFeed(`ws://admin:upgradeware@127.0.0.1:${cluster.port}/admin/feed`);
  events = feed.events;
}, 240_000);

afterAll(async () => {
  feed?.ws.terminate();
  await browser?.close();
  await cluster?.close();
}, 30_000);

function step<T>(name: string, fn: () => Promise<T>): Promise<T> {
  return shot(`cluster ${name}`, pages, () => cluster.output(), fn);
}

async function waitEvent(match: (e: Record<string, unknown>) => boolean, from = 0): Promise<Record<string, unknown>> {
  const until = Date.now() + WAIT;
  for (;;) {
    const e = events.slice(from).find(match);
    if (e) return e;
    if (Date.now() > until) throw new Error(`no such feed event; got ${JSON.stringify(events.slice(from))}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** Open the chat page in `page` (logged in); resolves with the instance its socket landed on. */
async function openChat(page: Page, user: string): Promise<string> {
  const mark = events.length;
  await page.goto(`${origin}/`);
  await page.locator('#status[data-state="online"]').waitFor({ timeout: WAIT });
  return String((await waitEvent((e) => e.type === 'open' && e.user === user, mark)).instance);
}

async function say(page: Page, text: string): Promise<void> {
  await page.fill('#text', text);
  await page.press('#text', 'Enter');
}

const message = (page: Page, text: string) => page.locator('#messages li.message', { has: page.locator('.text', { hasText: text }) }).first();

test('users on two instances chat; a logout on one instance closes the page on the other', async () => {
  const aliceCtx = await browser.newContext();
  const bobCtx = await browser.newContext();
  const alice1 = await aliceCtx.newPage();
  const alice2 = await aliceCtx.newPage();
  const bob = await bobCtx.newPage();
  pages.set('alice1', alice1).set('alice2', alice2).set('bob', bob);

  const where: Record<string, string> = {};
  await step('log in', async () => {
    for (const [page, user, password] of [[alice1, 'alice', 'wonderland'], [bob, 'bob', 'builder']] as const) {
      await page.goto(`${origin}/login`);
      await page.fill('input[name="user"]', user);
      await page.fill('input[name="password"]', password);
      const mark = events.length;
      await page.click('button[type="submit"]');
      await page.waitForURL(`${origin}/`);
      await page.locator('#status[data-state="online"]').waitFor({ timeout: WAIT });
      where[user === 'alice' ? 'alice1' : 'bob'] = String((await waitEvent((e) => e.type === 'open' && e.user === user, mark)).instance);
    }
  });

  await step('a second page of alice on the other instance', async () => {
    for (let i = 0; i < 8; i++) {
      where.alice2 = await openChat(alice2, 'alice');
      if (where.alice2 !== where.alice1) break;
      // Round robin: whether the next load lands elsewhere depends on how many requests a page load
      // makes. One more request every other attempt tries both parities.
      if (i % 2 === 0) await (await fetch(`${origin}/login`)).text();
    }
    expect(where.alice2).not.toBe(where.alice1);
    expect(new Set([where.alice1, where.alice2])).toEqual(new Set(['A', 'B']));
  });

  await step('chat across instances', async () => {
    await say(bob, 'hello from bob');
    await message(alice1, 'hello from bob').waitFor({ timeout: WAIT });
    await message(alice2, 'hello from bob').waitFor({ timeout: WAIT });
    await say(alice1, 'hi bob');
    await message(bob, 'hi bob').waitFor({ timeout: WAIT });
    await message(alice2, 'hi bob').waitFor({ timeout: WAIT });
  });

  await step('log out on one instance: both pages of alice go to the login page', async () => {
    // Which instance serves the logout is nginx's round robin; when it is the instance of alice2's
    // socket, the only socket elsewhere is alice1's own, which its navigation closes too (1001) and
    // proves nothing. So alice also holds a socket on each instance directly (her session cookie, no
    // nginx): whichever instance serves the logout, the witness on the other one must be closed with
    // 4001, and only the hub can have told it.
    const ports = /A on (\d+),.*B on (\d+),/.exec(cluster.output());
    expect(ports).not.toBeNull();
    const cookie = (await aliceCtx.cookies(origin)).map((c) => `${c.name}=${c.value}`).join('; ');
    const witnesses = new Map<string, { ws: WebSocket; closed: Promise<number> }>();
    for (const [instance, port] of [['A', ports![1]], ['B', ports![2]]] as const) {
      const mark = events.length;
      const ws = new WebSocket(`ws://127.0.0.1:${port}/chat`, { headers: { cookie } });
      const closed = new Promise<number>((resolve) => ws.once('close', (code) => resolve(code)));
      await new Promise((resolve, reject) => {
        ws.once('open', resolve);
        ws.once('error', reject);
      });
      await waitEvent((e) => e.type === 'open' && e.user === 'alice' && e.instance === instance, mark);
      witnesses.set(instance, { ws, closed });
    }

    const mark = events.length;
    await alice1.click('button:has-text("Log out")');
    await alice1.waitForURL(`${origin}/login`, { timeout: WAIT });
    // The other page did not log out itself: its socket was closed, and its login page says why.
    await alice2.waitForURL(`${origin}/login?ended=1`, { timeout: WAIT });
    await alice2.getByText('Your session ended, please log in again.').waitFor({ timeout: WAIT });
    const logout = await waitEvent((e) => e.type === 'logout' && e.user === 'alice', mark);
    // The socket on the instance that did not serve the logout was closed with 4001 too.
    const other = logout.instance === 'A' ? 'B' : 'A';
    await waitEvent((e) => e.type === 'close' && e.user === 'alice' && e.code === 4001 && e.instance === other, mark);
    let timer: NodeJS.Timeout | undefined;
    const codes = await Promise.race([
      Promise.all([witnesses.get('A')!.closed, witnesses.get('B')!.closed]),
      new Promise<never>((_, reject) => (timer = setTimeout(() => reject(new Error('a witness socket stayed open')), WAIT))),
    ]).finally(() => clearTimeout(timer));
    expect(codes).toEqual([4001, 4001]);
    // Bob, on his instance, is still connected.
    expect(await bob.locator('#status').getAttribute('data-state')).toBe('online');
  });

  await aliceCtx.close();
  await bobCtx.close();
});
