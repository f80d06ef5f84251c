/**
 * What the browser and cluster suites of the demo share: chromium as they launch it, the admin
 * feed they watch, and the two-instance cluster (`examples/chat/cluster.mjs`) they start.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { chromium, type Browser, type Page } from 'playwright-core';
import WebSocket from 'ws';
import { freePort } from '../../../test-support';
import { root } from './demo';

/** Debian's chromium, headless, with nothing of its own on the network. */
export function launchChromium(extraArgs: string[] = []): Promise<Browser> {
  return chromium.launch({
    executablePath: '/usr/bin/chromium',
    headless: true,
    timeout: 30_000,
    args: [
      '--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync',
      ...extraArgs,
    ],
  });
}

export interface Feed {
  ws: WebSocket;
  /** The events the feed has shown so far, in order. */
  events: Array<Record<string, unknown>>;
}

/** The demo's admin feed at `url` (credentials in it), once open. */
export async function openFeed(url: string, options: WebSocket.ClientOptions = {}): Promise<Feed> {
  const ws = new WebSocket(url, { handshakeTimeout: 5000, ...options });
  const events: Array<Record<string, unknown>> = [];
  ws.on('message', (data) => {
    const m = JSON.parse(String(data)) as { type: string; event?: Record<string, unknown> };
    if (m.type === 'event' && m.event) events.push(m.event);
  });
  await new Promise((resolve, reject) => {
    ws.once('open', resolve);
    ws.once('error', reject);
  });
  return { ws, events };
}

export interface Cluster {
  child: ChildProcess;
  /** nginx's port. */
  port: number;
  /** Everything the cluster printed so far (stdout and stderr). */
  output(): string;
  /** SIGTERM (SIGKILL after 5 s), and wait for the cluster and its children to let go. */
  close(): Promise<void>;
}

/** `node examples/chat/cluster.mjs` on a free port (after `build()`); resolves once it is up. */
export async function startCluster(): Promise<Cluster> {
  const port = await freePort();
  let output = '';
  const child = spawn(process.execPath, [path.join(root, 'examples/chat/cluster.mjs')], {
    cwd: root,
    env: { ...process.env, PORT: String(port), NO_COLOR: '1' },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  child.stdout!.on('data', (c: Buffer) => (output += c.toString()));
  child.stderr!.on('data', (c: Buffer) => (output += c.toString()));
  const close = async (): Promise<void> => {
    // 'close': the cluster and the children it started (nginx, redis-server) let go of the pipes.
    const closed = new Promise((r) => child.once('close', r));
    if (child.exitCode === null) child.kill('SIGTERM');
    const timer = setTimeout(() => child.kill('SIGKILL'), 5000);
    let giveUp: NodeJS.Timeout | undefined;
    await Promise.race([closed, new Promise((r) => (giveUp = setTimeout(r, 8000)))]);
    clearTimeout(timer);
    clearTimeout(giveUp);
    child.stdout?.destroy();
    child.stderr?.destroy();
  };
  const deadline = Date.now() + 30_000;
  while (!output.includes('behind nginx')) {
    if (child.exitCode !== null || Date.now() > deadline) {
      await close();
      throw new Error(`cluster did not start: ${output}`);
    }
    await new Promise((r) => setTimeout(r, 50));
  }
  return { child, port, output: () => output, close };
}

/** Where a failed step leaves its screenshots and the server's log. */
export const SHOTS = path.join(root, 'test-results/browser');

/**
 * Run one step of a browser test; when it fails, a screenshot of every open page of `pages` and
 * the server's log (`serverLog()`) go to test-results/browser/, named after the step.
 */
export async function step<T>(name: string, pages: ReadonlyMap<string, Page>, serverLog: () => string, fn: () => Promise<T>): Promise<T> {
  try {
    return await fn();
  } catch (err) {
    fs.mkdirSync(SHOTS, { recursive: true });
    const slug = name.replace(/[^a-z0-9]+/gi, '-').toLowerCase();
    for (const [label, page] of pages) {
      if (!page.isClosed()) await page.screenshot({ path: path.join(SHOTS, `${slug}--${label}.png`), fullPage: true, timeout: 5000 }).catch(() => undefined);
    }
    fs.writeFileSync(path.join(SHOTS, `${slug}--server.log`), serverLog());
    throw err;
  }
}
