/**
 * Client resets on the HTTP/2 path, through the full stack with session (stacks-child.cjs, a
 * child process: an uncaught exception ends it). 600 extended CONNECTs (RFC 8441) cut at varied
 * moments — RST_STREAM at once, a tick later, right after the 200, mid-frame — and whole h2
 * sessions destroyed or sent GOAWAY with streams in flight. The server must go on serving.
 */
import * as http2 from 'node:http2';
import { HOST, until } from '../../test-support';
import { h2Connect, h2WebSocket } from '../../test-support/http2';
import { startStacks, type Stacks } from './stacks';

const AUTH = 'Basic ' + Buffer.from('alice:wonderland').toString('base64');
const ROUNDS = 12;
const PER_ROUND = 50;

let stacks: Stacks;
let port = 0;

beforeAll(async () => {
  stacks = await startStacks();
  port = stacks.ports.h2;
}, 200_000);

afterAll(() => stacks?.stop());

const alive = () => stacks.alive();

/** One extended CONNECT cut at `moment`; resolves once the stream is closed (bounded). */
/** The streams of the current round: each with a description of its state, for a failure message. */
const open = new Map<number, { stream: http2.ClientHttp2Stream; describe: () => string }>();
function cut(session: http2.ClientHttp2Session, moment: number, cookie: string): Promise<void> {
  return new Promise((resolve) => {
    const headers: http2.OutgoingHttpHeaders = {
      ':method': 'CONNECT',
      ':protocol': 'websocket',
      ':scheme': 'https',
      ':path': moment % 2 ? '/ws' : '/held',
      'sec-websocket-version': '13',
      origin: 'https://localhost',
      authorization: AUTH,
    };
    if (moment % 3 === 0) headers.cookie = cookie;
    let stream: http2.ClientHttp2Stream;
    try {
      stream = session.request(headers, { endStream: false });
    } catch {
      return resolve();
    }
    const timer = setTimeout(() => stream.close(http2.constants.NGHTTP2_CANCEL), 2000);
    let got = 'nothing';
    stream.once('response', (h) => (got = String(h[':status'])));
    open.set(moment, { stream, describe: () => `moment ${moment % 4} id=${stream.id} pending=${stream.pending} closed=${stream.closed} destroyed=${stream.destroyed} rst=${stream.rstCode} got=${got} session.destroyed=${session.destroyed} session.closed=${session.closed}` });
    stream.on('error', () => undefined);
    // Read whatever comes: a reset stream with unread data is closed but never destroyed.
    stream.resume();
    stream.once('close', () => {
      clearTimeout(timer);
      resolve();
    });
    const rst = () => stream.close(http2.constants.NGHTTP2_CANCEL);
    switch (moment % 4) {
      case 0:
        rst();
        break;
      case 1:
        setImmediate(rst);
        break;
      case 2:
        stream.once('response', rst);
        break;
      default:
        // Mid-frame: a masked frame header announcing 256 bytes, 8 of them, then the reset.
        stream.once('response', () => {
          stream.write(Buffer.concat([Buffer.from([0x82, 0xfe, 0x01, 0x00, 1, 2, 3, 4]), Buffer.alloc(8, 0x61)]));
          setImmediate(rst);
        });
    }
  });
}

test(`${ROUNDS * PER_ROUND} extended CONNECTs cut at four moments, and sessions torn down with streams in flight: the server lives and serves`, async () => {
  const first = await h2Connect(`https://${HOST}:${port}`);
  const login = await new Promise<string>((resolve, reject) => {
    const s = first.session.request({ ':path': '/login', authorization: AUTH });
    const timer = setTimeout(() => reject(new Error('no answer to the login')), 5000);
    s.on('response', (h) => {
      clearTimeout(timer);
      resolve(String(h['set-cookie']).split(';')[0]!);
    });
    s.on('error', () => undefined);
    s.resume();
  });
  first.session.close();
  for (let round = 0; round < ROUNDS; round++) {
    const { session } = await h2Connect(`https://${HOST}:${port}`);
    session.on('error', () => undefined);
    for (let i = 0; i < PER_ROUND; i++) void cut(session, round * PER_ROUND + i, login);
    // Every third round, the whole session goes while its streams are in flight.
    if (round % 3 === 1) setImmediate(() => session.destroy());
    else if (round % 3 === 2) setImmediate(() => session.goaway(http2.constants.NGHTTP2_CANCEL));
    // A round is over when every stream of it is done: destroyed (the server answered or reset
    // it), or reset by this client. (A client stream reset while its own write is in flight is
    // closed but, in Node's client, never destroyed: its write callback never comes.)
    const done = (o: { stream: http2.ClientHttp2Stream }): boolean =>
      o.stream.destroyed || (o.stream.closed && o.stream.rstCode === http2.constants.NGHTTP2_CANCEL);
    const outcome = await until(() => [...open.values()].every(done), 10_000).then(
      () => 'done',
      () => 'hung',
    );
    const stuck = [...open.values()].filter((o) => !done(o)).map((o) => o.describe());
    session.destroy();
    expect({ round, outcome, stuck: stuck.slice(0, 3) }).toEqual({ round, outcome: 'done', stuck: [] });
    open.clear();
    alive();
  }
  const { session } = await h2Connect(`https://${HOST}:${port}`);
  try {
    const { ws, stream } = await h2WebSocket(session, '/ws', { headers: { authorization: AUTH } });
    const echoed = new Promise<string>((resolve) => ws.once('message', (m) => resolve(String(m))));
    ws.send('after the resets');
    expect(await echoed).toBe('after the resets');
    ws.terminate();
    stream.close();
  } finally {
    session.destroy();
  }
  alive();
}, 60_000);
