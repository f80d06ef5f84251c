/**
 * The demo in a real browser (issue 8): Debian's chromium, driven by playwright-core. The server
 * runs as `node examples/chat/server.mjs` in a child process on port 0. Two users log in through
 * the form and chat both ways; a visitor without a session has the socket refused (401); a page of
 * another origin cannot open it (403) even with the user's cookie; the page shows a dropped socket
 * and reconnects. A failed step leaves screenshots of every page in test-results/browser/.
 */
import * as fs from 'node:fs';
import * as http from 'node:http';
import type { AddressInfo } from 'node:net';
import * as path from 'node:path';
import type { Browser, BrowserContext, Page } from 'playwright-core';
import { build, request, startDemo, type Demo } from './demo';
import { SHOTS, launchChromium, openFeed, step as shot, type Feed } from './suites';

const WAIT = 10_000;
const OTHER_NAME = 'chat.test';
const PHONE = { width: 390, height: 760 };

let demo: Demo;
let browser: Browser;
let foreign: http.Server;
let foreignOrigin: string;
let feed: Feed | undefined;
let feedEvents: Array<Record<string, any>> = [];
const pages = new Map<string, Page>();
const problems: string[] = []; // page errors and console errors of the chat pages

beforeAll(async () => {
  build();
  demo = await startDemo();
  // Another site on this machine: a page of its own origin (another port).
  foreign = http.createServer((req, res) => {
    res.setHeader('Content-Type', 'text/html; charset=utf-8');
    res.end('<!doctype html><title>elsewhere</title><h1>a page of another origin</h1>');
  });
  await new Promise<void>((resolve) => foreign.listen(0, '127.0.0.1', resolve));
  foreignOrigin = `http://127.0.0.1:${(foreign.address() as AddressInfo).port}`;
  // Another name for this machine, as a LAN address or a hosts entry would be: the demo must
  // accept its own pages at any address it is reached by.
  browser = await launchChromium([`--host-resolver-rules=MAP ${OTHER_NAME} 127.0.0.1`]);
  // The admin feed, to see what the server made of each handshake.
  feed = await openFeed(`ws://admin:upgradeware@127.0.0.1:${demo.port}/admin/feed`);
  feedEvents = feed.events;
}, 240_000);

afterAll(async () => {
  feed?.ws.terminate();
  await browser?.close();
  await new Promise<void>((resolve) => (foreign ? foreign.close(() => resolve()) : resolve()));
  foreign?.closeAllConnections();
  await demo?.close();
}, 30_000);

/** Run one step; when it fails, a screenshot of every open page goes to test-results/browser/. */
function step<T>(name: string, fn: () => Promise<T>): Promise<T> {
  return shot(name, pages, () => demo.log(), fn);
}

async function newPage(label: string, context: BrowserContext, watch = true): Promise<Page> {
  const page = await context.newPage();
  page.setDefaultTimeout(WAIT);
  pages.set(label, page);
  if (watch) {
    page.on('pageerror', (err) => problems.push(`${label}: ${err.message}`));
    page.on('console', (msg) => {
      if (msg.type() === 'error') problems.push(`${label}: console: ${msg.text()}`);
    });
  }
  return page;
}

async function loginAs(page: Page, user: string, password: string, origin = demo.origin): Promise<void> {
  await page.goto(`${origin}/`);
  await page.waitForURL(`${origin}/login`);
  await page.fill('input[name="user"]', user);
  await page.fill('input[name="password"]', password);
  await page.click('button[type="submit"]');
  await page.waitForURL(`${origin}/`);
  await page.locator('#status[data-state="online"]').waitFor();
}

/** The id of the element that has the focus in `page`. */
const focused = (page: Page) => page.evaluate('document.activeElement ? document.activeElement.id : null') as Promise<string | null>;

async function say(page: Page, text: string): Promise<void> {
  await page.fill('#text', text);
  await page.press('#text', 'Enter');
}

/** The message in `page` whose text is `text`: its sender and its time. */
async function seen(page: Page, text: string): Promise<{ name: string; time: string }> {
  const item = page.locator('#messages li.message', { has: page.locator('.text', { hasText: text }) });
  await item.first().waitFor();
  return { name: await item.first().locator('.name').innerText(), time: await item.first().locator('time').innerText() };
}

const online = (page: Page) => page.locator('#online li').allInnerTexts();

/** In `page`, try a WebSocket to the chat: 'open', or how it closed. */
const tryChatSocket = (page: Page) =>
  page.evaluate(`new Promise((resolve) => {
    const ws = new WebSocket('ws://127.0.0.1:${demo.port}/chat');
    const timer = setTimeout(() => resolve('no answer'), 5000);
    ws.onopen = () => { clearTimeout(timer); ws.close(); resolve('open'); };
    ws.onclose = (e) => { clearTimeout(timer); resolve('closed ' + e.code); };
  })`) as Promise<string>;

const waitFeed = async (match: (e: Record<string, any>) => boolean): Promise<Record<string, any>> => {
  const until = Date.now() + WAIT;
  for (;;) {
    const e = feedEvents.find(match);
    if (e) return e;
    if (Date.now() > until) throw new Error(`no such feed event; got ${JSON.stringify(feedEvents)}`);
    await new Promise((r) => setTimeout(r, 50));
  }
};

let alice: Page;
let bob: Page;

test('two users log in through the form and chat both ways, with names, times and who is online', async () => {
  alice = await newPage('alice', await browser.newContext());
  bob = await newPage('bob', await browser.newContext());
  await step('alice logs in', () => loginAs(alice, 'alice', 'wonderland'));
  await step('bob logs in', () => loginAs(bob, 'bob', 'builder'));

  await step('both are online', async () => {
    await alice.locator('#online li', { hasText: 'bob' }).waitFor();
    expect(await online(alice)).toEqual(['alice', 'bob']);
    expect(await online(bob)).toEqual(['alice', 'bob']);
    expect(await alice.locator('#me').innerText()).toBe('signed in as alice');
    // Ready to type: the message box has the focus.
    expect(await focused(alice)).toBe('text');
    expect(await focused(bob)).toBe('text');
  });

  await step('alice writes, bob reads', async () => {
    await say(alice, 'Hi Bob, can you hear me?');
    const m = await seen(bob, 'Hi Bob, can you hear me?');
    expect(m.name).toBe('alice');
    expect(m.time).toMatch(/\d{1,2}:\d{2}:\d{2}/);
    await seen(alice, 'Hi Bob, can you hear me?');
  });

  await step('bob answers, alice reads', async () => {
    await say(bob, 'Loud and clear, Alice.');
    expect((await seen(alice, 'Loud and clear, Alice.')).name).toBe('bob');
    expect(await alice.locator('#messages li.message.mine').count()).toBe(1);
  });

  await step('a message is text, never markup', async () => {
    await say(bob, '<img src=x onerror="document.title=1">');
    await seen(alice, '<img src=x');
    expect(await alice.locator('#messages img').count()).toBe(0);
  });

  await demo.waitForLog(/^GET \/chat 101 \d+\.\d{3} ms/m);
});

test('a visitor who is not logged in is sent to the login form, and their WebSocket is refused with 401', async () => {
  const visitor = await newPage('visitor', await browser.newContext(), false);
  await step('the chat page redirects to the login form', async () => {
    await visitor.goto(`${demo.origin}/`);
    await visitor.waitForURL(`${demo.origin}/login`);
    await visitor.locator('text=Demo accounts').waitFor();
  });
  const before = (demo.log().match(/^GET \/chat 401 /gm) ?? []).length;
  await step('the socket is refused', async () => {
    expect(await tryChatSocket(visitor)).toBe('closed 1006');
    await demo.waitForLog(new RegExp(`^(?:[^]*?^GET /chat 401 ){${before + 1}}`, 'm'));
    expect(await waitFeed((e) => e.type === 'refused' && e.status === 401)).toMatchObject({ user: null, origin: demo.origin });
  });
});

test('a page of another origin cannot open the socket, even in a browser that holds a session (403)', async () => {
  const evil = await newPage('foreign', alice.context(), false);
  await step('the foreign page tries', async () => {
    await evil.goto(`${foreignOrigin}/`);
    expect(await tryChatSocket(evil)).toBe('closed 1006');
  });
  await step('the server refused it by its Origin', async () => {
    await demo.waitForLog(/^GET \/chat 403 /m);
    // The browser did send alice's cookie (same site): only the Origin guard stopped it.
    expect(await waitFeed((e) => e.type === 'refused' && e.status === 403)).toMatchObject({ user: 'alice', origin: foreignOrigin });
  });
  await evil.close();
});

test('a dropped socket shows on the page, which reconnects and goes on chatting', async () => {
  await step('the server drops every connection', async () => {
    const drop = await request(`${demo.origin}/admin/drop`, {
      method: 'POST',
      headers: { Authorization: 'Basic ' + Buffer.from('admin:upgradeware').toString('base64') },
    });
    expect(JSON.parse(drop.body).dropped).toBe(2);
  });
  await step('the pages say so', async () => {
    for (const page of [alice, bob]) {
      await page.locator('#status[data-state="offline"]', { hasText: 'reconnecting' }).waitFor();
      expect(await page.locator('#text').isDisabled()).toBe(true);
      await page.locator('#messages li.system', { hasText: 'Connection dropped by the server.' }).waitFor();
    }
  });
  await step('and reconnect', async () => {
    for (const page of [alice, bob]) {
      await page.locator('#status[data-state="online"]').waitFor();
      await page.locator('#messages li.system', { hasText: 'Reconnected.' }).waitFor();
    }
    // The history is not shown twice.
    expect(await alice.locator('#messages li.message', { hasText: 'Hi Bob' }).count()).toBe(1);
  });
  await step('and chat on', async () => {
    await say(alice, 'Still there?');
    expect((await seen(bob, 'Still there?')).name).toBe('alice');
  });
});

test('logging out closes the socket, the others see the user leave', async () => {
  await step('bob logs out', async () => {
    await bob.click('text=Log out');
    await bob.waitForURL(`${demo.origin}/login`);
    await alice.locator('#messages li.system', { hasText: 'bob left' }).waitFor();
    expect(await online(alice)).toEqual(['alice']);
  });
});

test('the chat pages had no script errors, and the server log has the 101s with their response times', () => {
  expect(problems).toEqual([]);
  const log = demo.log();
  expect((log.match(/^GET \/chat 101 \d+\.\d{3} ms - -$/gm) ?? []).length).toBeGreaterThanOrEqual(4);
  expect(log).toMatch(/^GET \/chat 401 /m);
  expect(log).toMatch(/^GET \/chat 403 /m);
  expect(log).toMatch(/^GET \/ 200 /m);
  expect(log).toMatch(/^POST \/login 302 /m);
});

describe('at a phone-sized viewport (390×760), on a demo of its own', () => {
  let phoneDemo: Demo;
  let phone: Page;
  let port: number;
  afterAll(async () => {
    await phone?.context().close();
    await phoneDemo?.close();
  }, 30_000);

  test('the message box is on screen and has the focus after login; a message goes out', async () => {
    phoneDemo = await startDemo();
    port = phoneDemo.port;
    phone = await newPage('phone', await browser.newContext({ viewport: PHONE, isMobile: true, hasTouch: true }));
    await step('carol logs in on a phone', () => loginAs(phone, 'carol', 'singer', phoneDemo.origin));
    await step('the composer is in the viewport, nothing scrolls sideways', async () => {
      for (const selector of ['#text', '#send', '#status']) {
        const box = await phone.locator(selector).boundingBox();
        expect(box).not.toBeNull();
        expect([selector, box!.y >= 0, box!.y + box!.height <= PHONE.height, box!.x >= 0, box!.x + box!.width <= PHONE.width]).toEqual([selector, true, true, true, true]);
      }
      expect(await phone.evaluate('document.documentElement.scrollWidth')).toBeLessThanOrEqual(PHONE.width);
      expect(await focused(phone)).toBe('text');
      fs.mkdirSync(SHOTS, { recursive: true });
      await phone.screenshot({ path: path.join(SHOTS, 'phone-chat.png') });
    });
    await step('a message typed right away goes out and stays above the box', async () => {
      await phone.keyboard.type('typed without tapping anything');
      await phone.keyboard.press('Enter');
      await seen(phone, 'typed without tapping anything');
      for (let i = 0; i < 25; i++) await say(phone, `line ${i}`);
      await seen(phone, 'line 24');
      const box = await phone.locator('#text').boundingBox();
      expect(box!.y + box!.height).toBeLessThanOrEqual(PHONE.height);
      // The newest line is shown whole, at the bottom of the list.
      const list = (await phone.locator('#messages').boundingBox())!;
      const last = (await phone.locator('#messages li').last().boundingBox())!;
      expect(await phone.locator('#messages li').last().innerText()).toContain('line 24');
      expect(last.y).toBeGreaterThanOrEqual(list.y);
      expect(last.y + last.height).toBeLessThanOrEqual(list.y + list.height + 1);
      await phone.screenshot({ path: path.join(SHOTS, 'phone-chat-full.png') });
    });
  }, 60_000);

  test('after a server restart the page says the session ended, on the login form', async () => {
    await step('the server restarts on the same port (its in-memory sessions are gone)', async () => {
      await phoneDemo.close();
      await phone.locator('#status[data-state="offline"]').waitFor();
      phoneDemo = await startDemo({ PORT: String(port) });
    });
    await step('the page goes to the login form and says why', async () => {
      await phone.waitForURL(`${phoneDemo.origin}/login?ended=1`, { timeout: 20_000 });
      await phone.locator('text=Your session ended, please log in again.').waitFor();
      const note = await phone.locator('.notice').boundingBox();
      expect(note!.y + note!.height).toBeLessThanOrEqual(PHONE.height);
      await phone.screenshot({ path: path.join(SHOTS, 'phone-session-ended.png') });
    });
    await step('logging in again brings the chat back', () => loginAs(phone, 'carol', 'singer', phoneDemo.origin));
  }, 60_000);

  test(`opened at another address of the machine (${OTHER_NAME}), login and the socket work: the origin follows the Host`, async () => {
    const other = `http://${OTHER_NAME}:${port}`;
    const page = await newPage('other-name', await browser.newContext({ viewport: PHONE }));
    await step('log in at the other address', () => loginAs(page, 'alice', 'wonderland', other));
    await step('the chat works there', async () => {
      await say(page, 'from the other address');
      expect((await seen(page, 'from the other address')).name).toBe('alice');
      expect(phoneDemo.log()).not.toMatch(/^POST \/login 403 /m);
    });
    await page.context().close();
  }, 60_000);
});
