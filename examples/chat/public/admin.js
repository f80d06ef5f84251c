// The admin page: the live feed of every chat connection event (/admin/feed, behind Basic auth:
// the browser sends the credentials it holds for the site with the handshake).
'use strict';
(() => {
  const $ = (id) => document.getElementById(id);
  const timeFormat = new Intl.DateTimeFormat(undefined, { hour: '2-digit', minute: '2-digit', second: '2-digit' });
  const open = new Map(); // key → connection
  let retries = 0;

  function describe(e) {
    switch (e.type) {
      case 'open': return `${e.user} connected to #${e.room} (${e.connections} open)`;
      case 'close': return `${e.user} left #${e.room}, code ${e.code} (${e.connections} open)`;
      case 'refused': return `handshake refused: ${e.status}${e.user ? ` (${e.user})` : ''}${e.origin ? ` from ${e.origin}` : ''}`;
      case 'login': return `${e.user} logged in`;
      case 'login-failed': return `failed login${e.user ? ` as ${e.user}` : ''}`;
      case 'logout': return `${e.user} logged out`;
      case 'drop': return `${e.by} dropped ${e.connections} connection(s)`;
      default: return JSON.stringify(e);
    }
  }

  function addEvent(e) {
    const li = document.createElement('li');
    li.className = `event ${e.type}`;
    const t = document.createElement('time');
    t.dateTime = e.time;
    t.textContent = timeFormat.format(new Date(e.time));
    li.append(t, ` ${describe(e)}`);
    $('events').prepend(li);
  }

  function renderConnections() {
    const rows = [...open.values()].map((c) => {
      const tr = document.createElement('tr');
      for (const v of [c.user, `#${c.room}`, timeFormat.format(new Date(c.since)), c.ip]) {
        const td = document.createElement('td');
        td.textContent = v;
        tr.append(td);
      }
      return tr;
    });
    $('connections').tBodies[0].replaceChildren(...rows);
  }

  function connect() {
    const el = $('status');
    el.dataset.state = 'connecting';
    el.textContent = 'connecting…';
    const ws = new WebSocket(`${location.protocol === 'https:' ? 'wss' : 'ws'}://${location.host}/admin/feed`);
    ws.onopen = () => {
      retries = 0;
      el.dataset.state = 'online';
      el.textContent = 'live';
    };
    ws.onmessage = (m) => {
      const msg = JSON.parse(m.data);
      if (msg.type === 'snapshot') {
        open.clear();
        msg.connections.forEach((c, i) => open.set(`s${msg.instance ?? ''}:${i}`, c));
        $('events').replaceChildren();
        msg.events.forEach(addEvent);
      } else if (msg.type === 'snapshot-part') {
        // Another instance's connections (several instances behind a proxy): its part replaces
        // the part it sent before.
        for (const k of [...open.keys()]) if (k.startsWith(`s${msg.instance}:`)) open.delete(k);
        msg.connections.forEach((c, i) => open.set(`s${msg.instance}:${i}`, c));
      } else if (msg.type === 'event') {
        const e = msg.event;
        if (e.type === 'open') open.set(`${e.time}-${e.user}`, { user: e.user, room: e.room, since: e.time, ip: e.ip });
        if (e.type === 'close') {
          for (const [k, c] of open) if (c.user === e.user && c.room === e.room) { open.delete(k); break; }
        }
        addEvent(e);
      }
      renderConnections();
    };
    ws.onclose = () => {
      const delay = Math.min(10, 2 ** retries++);
      el.dataset.state = 'offline';
      el.textContent = `disconnected — reconnecting in ${delay}s`;
      setTimeout(connect, delay * 1000);
    };
  }

  $('drop').addEventListener('click', () => {
    fetch('/admin/drop', { method: 'POST' }).catch(() => undefined);
  });

  connect();
})();
