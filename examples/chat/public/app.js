// The chat page: one WebSocket to /chat (the session cookie goes with the handshake), reconnects
// with a growing delay when the socket drops, and goes to the login page when the session is gone.
'use strict';
(() => {
  const $ = (id) => document.getElementById(id);
  const room = (new URLSearchParams(location.search).get('room') || 'lobby').toLowerCase();
  const socketUrl = `${location.protocol === 'https:' ? 'wss' : 'ws'}://${location.host}/chat${room === 'lobby' ? '' : `?room=${encodeURIComponent(room)}`}`;
  const timeFormat = new Intl.DateTimeFormat(undefined, { hour: '2-digit', minute: '2-digit', second: '2-digit' });
  let me = '';
  let ws = null;
  let retries = 0;
  let retryTimer = null;
  let countdown = null;
  let lastMessageId = null;
  let loggingOut = false;

  $('room').textContent = `#${room}`;
  document.title = `#${room} — upgradeware chat`;

  function status(state, text) {
    const el = $('status');
    el.dataset.state = state;
    el.textContent = text;
    const online = state === 'online';
    $('text').disabled = !online;
    $('send').disabled = !online;
    document.body.classList.toggle('offline', !online);
  }

  function item(className) {
    const li = document.createElement('li');
    li.className = className;
    $('messages').append(li);
    return li;
  }

  /** Once a line is filled in: the newest line, whole, just above the message box. */
  function scrollToEnd() {
    const list = $('messages');
    list.scrollTop = list.scrollHeight;
  }

  function system(text) {
    const li = item('system');
    li.textContent = text;
    scrollToEnd();
  }

  function message(m) {
    const li = item(m.user === me ? 'message mine' : 'message');
    li.dataset.id = m.id;
    const head = document.createElement('div');
    head.className = 'head';
    const name = document.createElement('span');
    name.className = 'name';
    name.textContent = m.user;
    const time = document.createElement('time');
    time.dateTime = m.time;
    time.textContent = timeFormat.format(new Date(m.time));
    head.append(name, time);
    const text = document.createElement('div');
    text.className = 'text';
    text.textContent = m.text;
    li.append(head, text);
    lastMessageId = m.id;
    scrollToEnd();
  }

  function presence(users) {
    const list = $('online');
    list.replaceChildren(
      ...users.map((u) => {
        const li = document.createElement('li');
        li.textContent = u;
        if (u === me) li.className = 'me';
        return li;
      }),
    );
    $('count').textContent = `(${users.length})`;
  }

  function connect() {
    clearTimeout(retryTimer);
    clearInterval(countdown);
    status('connecting', retries ? 'reconnecting…' : 'connecting…');
    ws = new WebSocket(socketUrl);
    ws.onopen = () => {
      if (retries) system('Reconnected.');
      retries = 0;
      status('online', 'connected');
      // Ready to type: the message box gets the focus, unless the user is busy elsewhere on the page.
      const active = document.activeElement;
      if (!active || active === document.body || active === $('text')) $('text').focus();
    };
    ws.onmessage = (e) => {
      let m;
      try {
        m = JSON.parse(e.data);
      } catch {
        return;
      }
      if (m.type === 'hello') {
        me = m.user;
        $('me').textContent = `signed in as ${me}`;
        // History after a reconnect: only what we have not shown yet.
        const seen = lastMessageId && m.history.findIndex((h) => h.id === lastMessageId);
        const fresh = seen === null || seen === -1 || seen === false ? m.history : m.history.slice(seen + 1);
        if (!lastMessageId) $('messages').replaceChildren();
        fresh.forEach(message);
        presence(m.online);
      } else if (m.type === 'message') {
        message(m);
      } else if (m.type === 'presence') {
        presence(m.online);
        if (m.joined && m.joined !== me) system(`${m.joined} joined`);
        if (m.left) system(`${m.left} left`);
      } else if (m.type === 'error') {
        system(`Server: ${m.error}`);
      }
    };
    ws.onclose = (e) => {
      ws = null;
      if (loggingOut) return; // this page's own "Log out": the form's answer takes us to /login
      if (e.code === 4001) {
        status('offline', 'logged out');
        location.href = '/login?ended=1';
        return;
      }
      // Still logged in? A refused handshake (401) looks like any other drop to a page.
      fetch('/me', { cache: 'no-store' })
        .then((r) => {
          if (r.status === 401) {
            status('offline', 'session ended');
            location.href = '/login?ended=1'; // the login form says the session ended
          } else retry(e);
        })
        .catch(() => retry(e));
    };
  }

  function retry(e) {
    const delay = Math.min(10, 2 ** retries) * 1000;
    retries++;
    if (retries === 1) system(e.code === 1012 ? 'Connection dropped by the server.' : 'Connection lost.');
    let left = Math.round(delay / 1000);
    const show = () => status('offline', `disconnected — reconnecting in ${left}s`);
    show();
    countdown = setInterval(() => {
      left = Math.max(0, left - 1);
      show();
    }, 1000);
    retryTimer = setTimeout(connect, delay);
  }

  $('status').addEventListener('click', () => {
    if (!ws) connect(); // reconnect now
  });

  $('composer').addEventListener('submit', (e) => {
    e.preventDefault();
    const text = $('text').value.trim();
    if (!text || !ws || ws.readyState !== WebSocket.OPEN) return;
    ws.send(JSON.stringify({ type: 'say', text }));
    $('text').value = '';
    $('text').focus();
  });

  document.querySelector('form[action="/logout"]').addEventListener('submit', () => {
    loggingOut = true;
  });

  connect();
})();
