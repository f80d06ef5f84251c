// Ours, full stack, saving a session on every handshake: the same server as ours-full.mjs with
// `saveUninitialized: true`, so every 101 carries the Set-Cookie of a session already in the store.
process.env.BENCH_SESSION_SAVE = '1';
await import('./ours-full.mjs');
