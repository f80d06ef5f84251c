/**
 * The demo over HTTP/2 in a real browser (issue 19): `HTTP2=1 node examples/chat/server.mjs`,
 * Debian's chromium. The page is loaded over h2 and the chat WebSocket rides the same connection
 * as an RFC 8441 extended CONNECT — proven by the server, which records the transport that served
 * each socket in the admin feed, and by the log line `CONNECT /chat 200`. A chromium that does not
 * speak HTTP/2 (`--disable-http2`) falls back to an HTTP/1.1 upgrade on the same server.
 */
import type { Browser, Page } from 'playwright-core';
import { build, startDemo, type Demo } from './demo';
import { launchChromium, openFeed, type Feed } from './suites';

const WAIT = 10_000;

let demo: Demo;
const browsers: Browser[] = [];
let feed: Feed | undefined;
let feedEvents: Array<Record<string, unknown>> = [];

beforeAll(async () => {
  build();
  demo = await startDemo({ HTTP2: '1' });
  feed = await openFeed(`wss://admin:upgradeware@127.0.0.1:${demo.port}/admin/feed`, { rejectUnauthorized: false });
  feedEvents = feed.events;
}, 240_000);

afterAll(async () => {
  feed?.ws.terminate();
  for (const b of browsers) await b.close();
  await demo?.close();
});

async function launch(extra: string[] = []): Promise<Browser> {
  const browser = await launchChromium(extra);
  browsers.push(browser);
  return browser;
}

async function loginAs(page: Page, user: string, password: string): Promise<void> {
  await page.goto(`${demo.origin}/`);
  await page.waitForURL(`${demo.origin}/login`);
  await page.fill('input[name="user"]', user);
  await page.fill('input[name="password"]', password);
  await page.click('button[type="submit"]');
  await page.waitForURL(`${demo.origin}/`);
  await page.locator('#status[data-state="online"]').waitFor();
}

async function openEvent(user: string): Promise<Record<string, unknown>> {
  const until = Date.now() + WAIT;
  for (;;) {
    const e = feedEvents.find((x) => x.type === 'open' && x.user === user);
    if (e) return e;
    if (Date.now() > until) throw new Error(`no open event for ${user}; got ${JSON.stringify(feedEvents)}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** The protocol the page itself was loaded over (`h2`, `http/1.1`), as the browser reports it. */
const protocolOf = (page: Page) => page.evaluate("performance.getEntriesByType('navigation')[0].nextHopProtocol") as Promise<string>;

test('loaded over h2, the chat WebSocket is served by extended CONNECT on the same connection', async () => {
  const browser = await launch();
  const page = await (await browser.newContext({ ignoreHTTPSErrors: true })).newPage();
  page.setDefaultTimeout(WAIT);
  await loginAs(page, 'alice', 'wonderland');
  expect(await protocolOf(page)).toBe('h2');
  expect(await openEvent('alice')).toMatchObject({ transport: 'h2', room: 'lobby' });
  await demo.waitForLog(/^CONNECT \/chat 200 \d+\.\d{3} ms/m);
  // And it chats: a message goes out over the h2 stream and comes back.
  await page.fill('#text', 'hello over HTTP/2');
  await page.press('#text', 'Enter');
  await page.locator('#messages li.message .text', { hasText: 'hello over HTTP/2' }).first().waitFor();
});

test('a browser that does not speak HTTP/2 gets the same chat over an HTTP/1.1 upgrade', async () => {
  const browser = await launch(['--disable-http2']);
  const page = await (await browser.newContext({ ignoreHTTPSErrors: true })).newPage();
  page.setDefaultTimeout(WAIT);
  await loginAs(page, 'bob', 'builder');
  expect(await protocolOf(page)).toBe('http/1.1');
  expect(await openEvent('bob')).toMatchObject({ transport: 'http/1.1' });
  await demo.waitForLog(/^GET \/chat 101 \d+\.\d{3} ms/m);
});
