/* global io, window, document */
/*
 * The realtime client of the fake site's pages: it connects and subscribes
 * the way Frappe's desk does (v15+), with the stock socket.io-client browser
 * bundle, and renders what it receives into the DOM so the tests assert on
 * what a user would see.
 *
 * Deliberately like the desk, not smarter:
 * - io(origin + '/' + sitename, { withCredentials: true, reconnectionAttempts: 3 }),
 *   no auth payload: the HttpOnly sid cookie travels with the handshake.
 * - Subscriptions are emitted once, when the page "loads the form"
 *   (socket.io-client buffers them until the first connect). They are NOT
 *   repeated after a reconnect, because Frappe's client does not do that.
 * - Progress: percent, or progress[0] / progress[1] * 100, as the desk's
 *   progress dialog computes it.
 *
 * window.rt exposes the socket and what happened, for the tests.
 */
(function () {
  'use strict';
  var boot = window.frappe.boot;
  var rt = {
    connects: 0,
    disconnects: [],
    connectErrors: [],
    firstTransport: null, // transport of the very first Engine.IO connection
    openTransports: [], // transport each (re)connection started with
    upgradedTo: null, // transport the first connection upgraded to
    upgrades: [],
    socketIds: [],
    events: [],
    reconnectFailed: false,
  };
  window.rt = rt;

  function $(id) {
    return document.getElementById(id);
  }
  function setText(id, text) {
    var el = $(id);
    if (el) el.textContent = String(text);
  }

  var socket = io(window.location.origin + '/' + boot.sitename, { withCredentials: true, reconnectionAttempts: 3 });
  rt.socket = socket;

  function status(text, colour) {
    setText('rt-status', text);
    var ind = $('rt-indicator');
    if (ind) ind.className = 'indicator ' + colour;
  }
  function transportName() {
    var engine = socket.io.engine;
    return engine && engine.transport ? engine.transport.name : '-';
  }

  // Every Engine.IO connection (the first one and each reconnect) opens with
  // the transport it starts with; the upgrade (if any) is reported by the engine.
  socket.io.on('open', function () {
    var engine = socket.io.engine;
    var first = engine.transport.name;
    rt.openTransports.push(first);
    if (rt.firstTransport === null) {
      rt.firstTransport = first;
      setText('rt-first-transport', first);
    }
    setText('rt-transport', first);
    engine.on('upgrade', function (transport) {
      rt.upgrades.push(transport.name);
      if (rt.upgradedTo === null) {
        rt.upgradedTo = transport.name;
        setText('rt-upgraded', transport.name);
      }
      setText('rt-transport', transport.name);
    });
  });
  socket.io.on('reconnect_failed', function () {
    rt.reconnectFailed = true;
    status('reconnect failed', 'red');
  });

  socket.on('connect', function () {
    rt.connects += 1;
    rt.socketIds.push(socket.id);
    setText('rt-connects', rt.connects);
    setText('rt-socket-id', socket.id);
    setText('rt-transport', transportName());
    status('connected', 'green');
  });
  socket.on('disconnect', function (reason) {
    rt.disconnects.push(reason);
    status('disconnected: ' + reason, 'orange');
  });
  socket.on('connect_error', function (err) {
    rt.connectErrors.push(err.message);
    status('connect_error: ' + err.message, 'red');
  });

  // Every event, in arrival order, for the event log and the tests.
  socket.onAny(function (event, message) {
    rt.events.push({ event: event, message: message, at: Date.now() });
    var li = document.createElement('li');
    li.setAttribute('data-event', event);
    li.textContent = event + ' ' + JSON.stringify(message);
    $('event-log').appendChild(li);
  });

  socket.on('doc_update', function (doc) {
    if (!doc || doc.doctype !== boot.doctype || doc.name !== boot.docname) return;
    setText('doc-modified', doc.modified);
    var banner = $('doc-banner');
    if (banner) banner.hidden = false;
  });

  socket.on('list_update', function (data) {
    if (!data || data.doctype !== boot.doctype) return;
    var li = document.createElement('li');
    li.setAttribute('data-name', data.name);
    li.textContent = data.name + (data.user ? ' (by ' + data.user + ')' : '');
    $('list-updates').appendChild(li);
  });

  socket.on('progress', function (data) {
    if (!data) return;
    var percent = data.progress ? (Number(data.progress[0]) / Number(data.progress[1])) * 100 : Number(data.percent);
    if (!(percent >= 0)) return;
    var dialog = $('progress');
    if (!dialog) return;
    dialog.hidden = false;
    setText('progress-title', data.title || 'Progress');
    $('progress-bar').value = percent;
    setText('progress-percent', Math.round(percent) + '%');
    setText('progress-description', data.description || '');
  });

  socket.on('msgprint', function (message) {
    var text = message && typeof message === 'object' ? message.message : message;
    setText('msgprint-message', text);
    $('msgprint').hidden = false;
  });

  socket.on('doc_viewers', function (data) {
    if (!data || data.doctype !== boot.doctype || data.docname !== boot.docname) return;
    var list = $('viewers');
    while (list.firstChild) list.removeChild(list.firstChild);
    data.users.forEach(function (user) {
      var li = document.createElement('li');
      li.setAttribute('data-user', user);
      li.textContent = user;
      list.appendChild(li);
    });
  });

  var pongs = 0;
  socket.on('pong', function () {
    pongs += 1;
    setText('rt-pongs', pongs);
  });
  $('rt-ping').addEventListener('click', function () {
    socket.emit('ping');
  });

  // "Form load": list view, form, presence, background job; once, like the desk.
  socket.emit('doctype_subscribe', boot.doctype);
  socket.emit('doc_subscribe', boot.doctype, boot.docname);
  socket.emit('doc_open', boot.doctype, boot.docname);
  if (boot.task_id) socket.emit('task_subscribe', boot.task_id);
})();
